# syntax=docker/dockerfile:1.7
# l3 operator image: a static (musl) binary on distroless/static, running as non-root.
#   make image                 # or: docker build -t ghcr.io/l3-dev/l3:dev .
# The chart runs it with a read-only root filesystem, no capabilities and seccomp RuntimeDefault.

ARG RUST_IMAGE=rust:1.95-alpine3.22
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# C toolchain for aws-lc-sys/ring (rustls crypto); Alpine's Rust targets musl and links statically.
RUN apk add --no-cache musl-dev build-base cmake perl linux-headers
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
# Debug info is for local profiling; the image ships a stripped binary.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin l3 \
 && cp target/release/l3 /l3 \
 && if ldd /l3 2>&1 | grep -q '=>'; then echo "l3 is not statically linked" >&2; exit 1; fi

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="l3" \
      org.opencontainers.image.description="Latency-aware load balancing for multi-cluster Linkerd service meshes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/l3-dev/l3"
COPY --from=build --chown=0:0 --chmod=0555 /l3 /l3
# distroless "nonroot": uid/gid 65532, matching the chart's runAsUser/runAsGroup.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/l3"]
CMD ["run"]
