#!/usr/bin/env bash
# Make Debian's Chromium available for the end-to-end tests (never a downloaded browser build).
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the end-to-end tests..."
  apt-get update -qq >/dev/null 2>&1 || true
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "WARNING: /usr/bin/chromium is missing and could not be installed (need root + apt-get);" \
     "the end-to-end browser tests will be skipped." >&2
exit 0
