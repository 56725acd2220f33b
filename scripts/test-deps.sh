#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: Mosquitto's
# broker and command-line clients (stock clients act as devices in the
# tests, and Mosquitto is the baseline broker of the benchmarks), and
# Chromium (the dashboard's browser tests drive it headless).
set -euo pipefail
need=()
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v mosquitto >/dev/null && [ -x "$(command -v mosquitto)" ] || need+=(mosquitto)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts a system-wide broker on :1883; the tests start
# their own on free loopback ports, so stop it if it came up.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  $SUDO systemctl stop mosquitto || true
fi
