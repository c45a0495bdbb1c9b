#!/usr/bin/env bash
# Install the openai node SDK the gateway's node test uses (tests/gateway/node, pinned by its lock file).
set -u
dir="$(dirname "$0")/../tests/gateway/node"
if [ -d "$dir/node_modules/openai" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "WARNING: npm is missing; the node SDK gateway test will skip without node or fail without the SDK" >&2
  exit 0
fi
echo "Installing the openai node SDK for the gateway test..."
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
