# The Dockyard operator image: `kopf run -m dockyard_operator.main` (charts/dockyard).
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t dockyard/operator:0.1.0 .
# Debian 12 ships Python 3.11, the version the project is written for. The project is
# one distribution: the operator's image carries the whole package, as the shim's does.
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
# Compiled now: the root filesystem is read-only at run time.
RUN /opt/dockyard/bin/pip install --no-cache-dir /src \
 && /opt/dockyard/bin/python -m compileall -q /opt/dockyard/lib

FROM debian:${DEBIAN}
# skopeo resolves image tags to digests (pinning); git fetches, commits and pushes a
# stage's overlay (GitOps write-back), over ssh with a deploy key (openssh-client).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates git openssh-client \
    skopeo \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/dockyard /opt/dockyard
ENV PATH=/opt/dockyard/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A fixed uid, so the chart's runAsNonRoot can be checked by the kubelet.
RUN groupadd --system --gid 10001 dockyard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp dockyard
USER 10001:10001
EXPOSE 8080 8000 9443
CMD ["kopf", "run", "-m", "dockyard_operator.main", "--all-namespaces", \
     "--liveness", "http://0.0.0.0:8080/healthz"]
