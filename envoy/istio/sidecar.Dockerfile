# Container image of the nanogate sidecar, for sidecar-deployment.yaml. Build from the
# repository root (BuildKit reads sidecar.Dockerfile.dockerignore beside this file):
#
#   docker build -f envoy/istio/sidecar.Dockerfile -t REGISTRY/nanogate/nanogate-sidecar:0.1.0 .
#   docker push REGISTRY/nanogate/nanogate-sidecar:0.1.0
#
# The result runs as the distroless "nonroot" user (65532), as the Deployment's securityContext
# expects, with a read-only root file system (it writes nothing: the store is PostgreSQL).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package nanogate-sidecar

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/nanogate-sidecar /usr/local/bin/nanogate-sidecar
USER 65532:65532
EXPOSE 8402
ENTRYPOINT ["/usr/local/bin/nanogate-sidecar"]
