# syntax=docker/dockerfile:1
# RCRT Secrets server image: `rcrt-server` and the `rcrt` CLI, nothing else.
#
#   docker build -t rcrt-server .          (or: scripts/container-image, with podman)
#   docker run --read-only -v rcrt-data:/data -e LOCAL_KEK_BASE64 -p 8081:8081 rcrt-server
#
# The KEK is never part of the image: pass it at run time (LOCAL_KEK_BASE64, or
# LOCAL_KEK_BASE64_FILE=/run/secrets/rcrt_kek with a Docker/Compose/Kubernetes secret).
# See docs/deploy.md.

# ---- build stage ----------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
# A failing ldd in the pipe below must fail the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# The crate registry and target/ are cache mounts (BuildKit and buildah): a rebuild after a
# source change recompiles only what changed. target/ is not part of the image, so the
# binaries are copied out in the same step, without their DWARF line tables (the release
# profile keeps them for local backtraces; they are 80% of the binaries' size). The symbol
# table stays, so a backtrace still names functions.
RUN --mount=type=cache,id=rcrt-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=rcrt-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin rcrt-server --bin rcrt \
 && install -D -m 0755 target/release/rcrt-server /rootfs/usr/local/bin/rcrt-server \
 && install -D -m 0755 target/release/rcrt /rootfs/usr/local/bin/rcrt \
 && strip --strip-debug /rootfs/usr/local/bin/rcrt-server /rootfs/usr/local/bin/rcrt

# The runtime root, distroless style: the shared libraries the two binaries load (glibc, libgcc_s
# and the dynamic loader, as ldd lists them), Debian's Mozilla CA bundle (built from
# /usr/share/ca-certificates/mozilla, so CAs added to the build machine's store do not leak into
# the image), a passwd/group entry for the numeric user, and (apart) /data for the state.
RUN set -eu; \
    ldd /rootfs/usr/local/bin/rcrt-server /rootfs/usr/local/bin/rcrt \
      | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*[^:]$/ { print $1 }' \
      | sort -u \
      | while read -r lib; do cp --parents -L "$lib" /rootfs/; done; \
    mkdir -p /rootfs/etc/ssl/certs /state/data; \
    cat /usr/share/ca-certificates/mozilla/*.crt > /rootfs/etc/ssl/certs/ca-certificates.crt; \
    echo 'rcrt:x:10001:10001:rcrt:/data:/sbin/nologin' > /rootfs/etc/passwd; \
    echo 'rcrt:x:10001:' > /rootfs/etc/group; \
    echo 'hosts: files dns' > /rootfs/etc/nsswitch.conf; \
    chmod 0700 /state/data

# ---- runtime stage --------------------------------------------------------------------------
FROM scratch

COPY --from=build /rootfs/ /
# The state directory belongs to the server's user (mode 0700): a new named volume mounted here
# takes this owner and mode. Copied on its own so that /data is a directory this COPY creates,
# which --chown then covers (it does not change directories that already exist).
COPY --from=build --chown=10001:10001 /state/ /

# A numeric user (Kubernetes' runAsNonRoot can check it without reading /etc/passwd).
USER 10001:10001
# The server's working directory is its state, so a read-only root filesystem works: the
# default database (DB_URL unset: rcrt.db in the working directory, i.e. /data/rcrt.db), SQLite's
# temporary files, the default BOOTSTRAP_TOKEN_OUTPUT_FILE, and an optional .env (read after the
# environment). DB_URL is deliberately not set here: an ENV value would make the server refuse
# the DB_URL_FILE that docker-compose.prod.yml sets (both set), and would take precedence over
# a .env.
WORKDIR /data
# Off loopback, AUTH_MODE defaults to token: the first start writes an admin token to
# /data/bootstrap-token (or set BOOTSTRAP_ADMIN_TOKEN_FILE to a secret holding one).
ENV BIND_ADDR=0.0.0.0:8081
VOLUME ["/data"]
EXPOSE 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/rcrt-server", "healthcheck"]
# The server drains open requests on SIGTERM and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rcrt-server"]

# Last, so that a new commit (REVISION) changes only this metadata, not the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rcrt-server" \
      org.opencontainers.image.description="RCRT Secrets: envelope-encrypted secrets service (rcrt-server) and its CLI (rcrt)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
