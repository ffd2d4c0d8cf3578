# sandport as a static binary in an empty image.
#
# Build the binary on the host first (glibc's static libraries are enough; the
# explicit --target keeps proc-macros buildable):
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu -p sandport
#
# then build the image with the repository root as context. deploy/build-images.sh
# does both without sending the whole target/ directory to the Docker daemon.
#
# There is no shell, CA bundle or passwd file in the image: the user is numeric,
# the binary handles SIGTERM itself as PID 1, logs go to stdout. To read the
# Docker socket as this user, add the socket's group (compose: group_add).
FROM scratch

COPY target/x86_64-unknown-linux-gnu/release/sandport /sandport

USER 65532:65532
# public listener, admin listener (/health, /ready, /metrics)
EXPOSE 8080 9090
ENTRYPOINT ["/sandport"]
CMD ["serve", "--config", "/etc/sandport/sandport.toml"]
