#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: Mosquitto's
# broker and command-line clients (stock clients act as devices in the
# tests, Mosquitto is the external broker of the multi-instance tests and
# the baseline of the benchmarks), PostgreSQL and InfluxDB (the tests start
# their own servers from these binaries on free loopback ports), Chromium
# (the dashboard's browser tests drive it headless), and Node.js with npm
# (`make ui` installs the dashboard's charting library with them).
set -euo pipefail
need=()
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v mosquitto >/dev/null && [ -x "$(command -v mosquitto)" ] || need+=(mosquitto)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
command -v influxd >/dev/null || need+=(influxdb)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
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
# The Debian packages start system-wide servers (Mosquitto on :1883,
# PostgreSQL on :5432, InfluxDB on :8086) where systemd runs; the tests
# start their own on free loopback ports, so stop those if they came up.
if command -v systemctl >/dev/null; then
  for s in mosquitto postgresql influxdb; do
    if systemctl is-active --quiet "$s" 2>/dev/null; then
      $SUDO systemctl stop "$s" || true
    fi
  done
fi
