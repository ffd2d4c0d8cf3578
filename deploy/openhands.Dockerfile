# The upstream OpenHands app image plus the sandport integration.
#
# Context: the repository root (deploy/build-images.sh stages a small one).
# The upstream image is not rebuilt: the manifest integrations/openhands/patches.toml
# is applied to the installed `openhands` package, at build time (so a build
# against a drifted upstream fails here) and again at every start by the
# entrypoint, which refuses to start the app when a critical patch is not in
# place or the security self-check fails.
#
# The manifest pins openhands-ai 1.11.0; use the image of that release.
ARG OPENHANDS_IMAGE=docker.openhands.dev/openhands/openhands:1.11.0
FROM ${OPENHANDS_IMAGE}

USER root

COPY target/x86_64-unknown-linux-gnu/release/sandport /usr/local/bin/sandport
COPY integrations/openhands/patches.toml /opt/sandport/openhands/patches.toml
COPY integrations/openhands/sandport_openhands/ /opt/sandport/openhands/sandport_openhands/
COPY deploy/openhands-entrypoint.sh /opt/sandport/openhands-entrypoint.sh

# The entrypoint finds the directory holding the `openhands` package itself;
# set SANDPORT_PATCH_ROOT to override.
RUN chmod 0755 /opt/sandport/openhands-entrypoint.sh /usr/local/bin/sandport \
 && SANDPORT_ONLY_PATCH=1 /opt/sandport/openhands-entrypoint.sh

ENV SANDPORT_MANIFEST=/opt/sandport/openhands/patches.toml \
    OPENHANDS_SUPPRESS_BANNER=1

ENTRYPOINT ["/opt/sandport/openhands-entrypoint.sh"]
CMD ["uvicorn", "openhands.server.listen:app", "--host", "0.0.0.0", "--port", "3000"]
