# The Dockyard node shim image: the node daemon (`dockyard shim`) and the node agent
# (`dockyard agent`), run by the chart's DaemonSet. The shim is the container runtime
# itself (no runc): it needs the kernel (the pod is privileged), skopeo for registries and
# iproute2 for the node's bridge network.
# Build from the repository root:
#   docker build -f images/shim.Dockerfile -t dockyard/shim:0.1.0 .
ARG DEBIAN=bookworm-slim

FROM debian:${DEBIAN} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/dockyard
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY crds/dockyard_api /src/crds/dockyard_api
COPY operator /src/operator
COPY node-shim /src/node-shim
COPY cli /src/cli
# Compiled now: every `dockyard` command would otherwise compile what it imports.
RUN /opt/dockyard/bin/pip install --no-cache-dir /src \
 && /opt/dockyard/bin/python -m compileall -q /opt/dockyard/lib

FROM debian:${DEBIAN}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates skopeo iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/dockyard /opt/dockyard
ENV PATH=/opt/dockyard/bin:$PATH PYTHONUNBUFFERED=1
# Root, as a runtime must be; the state root and the socket come from the host.
CMD ["dockyard", "shim"]
