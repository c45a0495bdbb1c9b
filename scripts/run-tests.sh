#!/usr/bin/env bash
# Run the linters, then the test suite (arguments go to pytest: `make test-fast` passes its -m).
# Any linter failing fails the run before a test starts; "no tests collected" (pytest exit 5) is a
# failure too, not a pass.
set -u
cd "$(dirname "$0")/.."

echo "ruff check ."
.venv/bin/ruff check . || { echo "ERROR: ruff found problems (\`.venv/bin/ruff check --fix .\` fixes the safe ones)" >&2; exit 1; }
echo "lint-imports"
.venv/bin/lint-imports || { echo "ERROR: an import breaks a contract in pyproject.toml (docs/decisions.md, \"Rooms\")" >&2; exit 1; }

.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" = "5" ]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
