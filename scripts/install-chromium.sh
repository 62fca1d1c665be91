#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests. Needs root, as on the CI machines.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "Chromium is missing: install Debian's package 'chromium' (apt-get install chromium) and run again." >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
