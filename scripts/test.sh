#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: lint, types, import layers, all tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k quantity`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"; ruff check .
echo "== mypy (strict)"; mypy
echo "== import layers"; lint-imports
echo "== dockyard crd generate --check"; dockyard crd generate --check
echo "== pytest"
set +e
pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [[ $status -eq 5 ]]; then
  echo "test: pytest collected no tests" >&2
  exit 1
fi
exit $status
