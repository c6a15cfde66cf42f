# syntax=docker/dockerfile:1.7
# l3 operator image, for those with a container engine:
#   docker build -t ghcr.io/l3-dev/l3:0.1.0 .
# Without an engine, `make image` builds the same image as an OCI archive (scripts/image.sh). Both
# use scripts/image-rootfs.sh for the root filesystem, so the layout is the same: /l3 with its
# glibc libraries and loader, CA certificates, user l3 (65532:65532), nothing else.
# The chart runs it with a read-only root filesystem, no capabilities and seccomp RuntimeDefault.

ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin l3 \
 && scripts/image-rootfs.sh target/release/l3 /rootfs

FROM scratch
# Pass them as `make image` sets them: --build-arg VERSION=... REVISION=$(git rev-parse HEAD)
# CREATED=<RFC 3339>; the release workflow publishes the `make image` archive, not this.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="l3" \
      org.opencontainers.image.description="Latency-aware load balancing for multi-cluster Linkerd service meshes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/l3-dev/l3" \
      org.opencontainers.image.url="https://github.com/l3-dev/l3" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /rootfs/ /
ENV PATH=/ SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/l3"]
CMD ["run"]
