#!/usr/bin/env bash
# Set up (scripts/setup.sh), then show Dockyard end to end as far as it goes today: the API
# generated from the models, every example checked the way the API server will check it,
# the documentation of a field, and a bad manifest refused with the field named.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "dockyard version"
dockyard version

step "The CRDs are generated from the pydantic models (and are up to date)"
dockyard crd generate --check
ls crds/

step "Every example, checked by the models and by the CRD schema + CEL rules"
dockyard validate examples/

step "What kubectl explain will show: dockyard explain container.spec.resources"
dockyard explain container.spec.resources

step "A bad manifest is refused, naming the field and the fix"
if dockyard validate tests/catalogue/invalid/container-nodename-and-selector.yaml \
     tests/catalogue/invalid/container-memory-bad-suffix.yaml; then
  echo "demo: the bad manifests were accepted" >&2; exit 1
fi

step "Helm and kustomize see the same CRDs"
helm lint --strict charts/dockyard
kubectl kustomize deploy/base | grep -c "kind: CustomResourceDefinition"
echo
echo "demo: done"
