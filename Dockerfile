# syntax=docker/dockerfile:1
#
# regate container image: a multi-stage build.
#   1. builder: the Rust toolchain builds the release binary (policies embedded in it).
#   2. runtime: distroless "cc" (glibc and libgcc only: regate links ring's and mimalloc's C code
#      against glibc), no shell, no package manager, running as the unprivileged user 65532.
#
#   docker build -t regate:0.1.0 .
#   docker run --rm -p 8443:8443 -p 9090:9090 regate:0.1.0
#
# Pin both base images by digest in a release pipeline (FROM image:tag@sha256:...).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# The whole source tree (.dockerignore keeps target/, .git/, certificates and the chart out):
# Cargo.toml, Cargo.lock, src/, the policies/ embedded in the binary, and any targets Cargo.toml
# names. BuildKit cache mounts keep the registry and the build directory between builds.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin regate \
    && install -D -m 0755 target/release/regate /out/regate

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="regate" \
      org.opencontainers.image.description="Kubernetes policy-as-code admission webhook (Rego policies, evaluated by regorus)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder --chown=0:0 /out/regate /regate
# distroless's "nonroot" user; the Helm chart runs it with a read-only root filesystem.
USER 65532:65532
# A writable working directory for the development certificate `regate serve` generates into
# certs/ when started without --tls-cert/--tls-key (the chart always mounts a certificate).
WORKDIR /home/nonroot
# 8443: HTTPS webhook (/validate, /mutate, /healthz, /readyz); 9090: plain HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/regate"]
CMD ["serve", "--listen=0.0.0.0:8443", "--metrics-listen=0.0.0.0:9090"]
