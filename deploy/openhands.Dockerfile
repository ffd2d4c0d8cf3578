# The OpenHands app with the sandport integration, built by deploy/build-images.sh.
#
# BASE_IMAGE is either the kit's Debian root filesystem (sandport-base:HASH, Python 3.13),
# with the locked virtualenv staged as venv/ (deploy/locks/openhands-app.txt), or, where a
# registry is reachable, upstream's app image of the pinned release, which already holds
# /app/.venv (the staged venv/ is then empty). Both put the app in /app/.venv.
#
# The manifest integrations/openhands/patches.toml is applied to the installed `openhands`
# package at build time (so a build against a drifted upstream fails here) and again at every
# start by the entrypoint, which refuses to start the app when a critical patch is not in
# place or the security self-check fails.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

USER root
COPY venv/ /app/.venv/
COPY bin/sandport /usr/local/bin/sandport
COPY integrations/openhands/patches.toml /opt/sandport/openhands/patches.toml
COPY integrations/openhands/sandport_openhands/ /opt/sandport/openhands/sandport_openhands/
COPY deploy/openhands-entrypoint.sh /opt/sandport/openhands-entrypoint.sh

ENV PATH=/app/.venv/bin:$PATH \
    SANDPORT_MANIFEST=/opt/sandport/openhands/patches.toml \
    OPENHANDS_SUPPRESS_BANNER=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    PYTHONUNBUFFERED=1
WORKDIR /app

RUN chmod 0755 /opt/sandport/openhands-entrypoint.sh /usr/local/bin/sandport \
 && SANDPORT_ONLY_PATCH=1 /opt/sandport/openhands-entrypoint.sh

EXPOSE 3000
ENTRYPOINT ["/opt/sandport/openhands-entrypoint.sh"]
# the entrypoint adds --no-proxy-headers to uvicorn (and refuses --proxy-headers)
CMD ["uvicorn", "openhands.server.listen:app", "--host", "0.0.0.0", "--port", "3000"]
