# The sandbox image: what upstream's app starts for every conversation, built by
# deploy/build-images.sh from the kit's Debian root filesystem (Python 3.13) and the locked,
# patched virtualenv staged as venv/ (deploy/locks/agent-server.txt,
# integrations/openhands/agent-server-patches.toml).
#
# It mirrors the layout of upstream's `-python` agent-server image without its desktop
# parts: the agent server in /agent-server/.venv, started by tini as user `openhands`
# (uid 10001, passwordless sudo, as upstream), /workspace/project as the working directory.
# Upstream's app passes `--port 8000` as the command. VS Code (port 8001) and VNC are not
# part of this image: they are downloaded from outside the package registries.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

USER root
RUN groupadd -g 10001 openhands \
 && useradd -m -u 10001 -g 10001 -s /bin/bash openhands \
 && echo 'openhands ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/openhands \
 && chmod 0440 /etc/sudoers.d/openhands \
 && mkdir -p /workspace/project \
 && chown -R openhands:openhands /workspace \
 # the workspace is a volume owned by another uid; git must still work in it (seed patch 17)
 && git config --system safe.directory '*'

COPY --chown=10001:10001 venv/ /agent-server/.venv/

ENV LC_ALL=C.UTF-8 \
    LANG=C.UTF-8 \
    OH_ENABLE_VNC=false \
    LOG_JSON=true \
    OPENHANDS_SUPPRESS_BANNER=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    # Docker's --init may be PID 1 (upstream's app asks for it); tini then reaps as a subreaper
    TINI_SUBREAPER=1
USER openhands
WORKDIR /workspace/project
EXPOSE 8000
ENTRYPOINT ["tini", "--", "/agent-server/.venv/bin/python", "-m", "openhands.agent_server"]
CMD ["--port", "8000"]
