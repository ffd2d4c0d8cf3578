# The commands developers and CI run. `make test` is the whole suite; .ci/run installs what it
# needs on a bare machine and then runs exactly `make test`.

.PHONY: run test lint unit js openhands deploy e2e images sweep fuzz

# Run the gateway on its embedded defaults (127.0.0.1:8080, admin 127.0.0.1:9090).
run:
	cargo run --release -p sandport -- serve

# Everything: formatting, lints, Rust unit and integration tests (real binary, real Docker,
# real Chromium), the browser script's tests, the OpenHands integration against the real
# package, the deployment kit (compose file, entrypoint, the FROM scratch image), and the kit
# end to end (its images, the compose stack, two users in headless Chromium).
test: lint unit js openhands deploy e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	python3 scripts/fn-lengths.py

unit:
	cargo test --workspace --locked

js:
	node --test crates/sandport/assets/test/

openhands:
	cargo build -p sandport --locked
	bash integrations/openhands/ci.sh target/debug/sandport

# The scratch image needs a static binary; a debug build is enough to prove it starts.
STATIC_TARGET = x86_64-unknown-linux-gnu
deploy: openhands
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked -p sandport --target $(STATIC_TARGET)
	SANDPORT_BINARY=target/$(STATIC_TARGET)/debug/sandport bash deploy/check.sh target/debug/sandport --image

# Every image of the kit, from this checkout (cached under /var/cache/sandport-ci).
images:
	deploy/build-images.sh all

# The kit end to end, with the static debug binary `deploy` built.
e2e: deploy
	SANDPORT_BINARY=target/$(STATIC_TARGET)/debug/sandport bash deploy/e2e/run.sh

# Remove Docker resources left by test processes that died.
sweep:
	cargo run -q -p sandport-testkit --bin sandport-test-sweep

# The cargo-fuzz targets (fuzz/, nightly and cargo-fuzz needed; not part of `make test`): each
# target runs FUZZ_SECONDS seconds on one core; non-zero exit on a crash. docs/fuzzing.md.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh
