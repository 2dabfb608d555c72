#!/usr/bin/env bash
# Installs icsmon in a local venv and replays the demo captures on the embedded store:
# prints the decoded events, the alerts, and the assets the traffic revealed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e . >/dev/null 2>&1 || .venv/bin/pip install -e .
store=$(mktemp -d)/demo.db
demo=(pcaps/modbus/*.pcap pcaps/s7comm/*.pcap pcaps/opcua/*.pcap)
existing=()
for f in "${demo[@]}"; do [ -f "$f" ] && existing+=("$f"); done
echo "== decoded events"
.venv/bin/icsmon replay "${existing[@]}" --events --store "$store" --site demo-site
echo "== alerts"
.venv/bin/icsmon alerts --store "$store"
echo "== assets"
.venv/bin/icsmon assets --store "$store"
echo "(store kept at $store)"
