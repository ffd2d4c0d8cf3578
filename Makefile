# The commands developers and CI run. `make test` is the whole suite; .ci/run installs what it
# needs on a bare machine and then runs exactly `make test`.

.PHONY: run test lint unit js openhands sweep

# Run the gateway on its embedded defaults (127.0.0.1:8080, admin 127.0.0.1:9090).
run:
	cargo run --release -p sandport -- serve

# Everything: formatting, lints, Rust unit and integration tests (real binary, real Docker),
# the browser script's tests, and the OpenHands integration against the real package.
test: lint unit js openhands

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked

js:
	node --test crates/sandport/assets/test/

openhands:
	cargo build -p sandport --locked
	bash integrations/openhands/ci.sh target/debug/sandport

# Remove Docker resources left by test processes that died.
sweep:
	cargo run -q -p sandport-testkit --bin sandport-test-sweep
