#!/usr/bin/env bash
# Installs Node.js and npm from Debian when missing: `make ui` (a step of
# `make build`, `make run` and `make test`) installs the dashboard's
# charting library with npm from its lockfile.
set -euo pipefail
command -v npm >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing nodejs npm (for the dashboard's assets)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
