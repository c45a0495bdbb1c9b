#!/usr/bin/env bash
# Run the whole test suite. "No tests collected" (pytest exit 5) is a failure, not a pass.
set -u
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" = "5" ]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
