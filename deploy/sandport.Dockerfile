# sandport as a static binary in an empty image.
#
# Built by deploy/build-images.sh, which builds the static binary (glibc's static libraries
# are enough) and stages a small context holding it as bin/sandport.
#
# There is no shell, CA bundle or passwd file in the image: the user is numeric,
# the binary handles SIGTERM itself as PID 1, logs go to stdout. To read the
# Docker socket as this user, add the socket's group (compose: group_add).
FROM scratch

COPY bin/sandport /sandport

USER 65532:65532
# public listener, admin listener (/health, /ready, /metrics)
EXPOSE 8080 9090
ENTRYPOINT ["/sandport"]
CMD ["serve", "--config", "/etc/sandport/sandport.toml"]
