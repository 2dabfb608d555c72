#!/usr/bin/env bash
# Installs everything the tests need (Debian packages, a Python venv with the project and its
# test extras, Kafka and Elasticsearch from Maven Central) and runs the whole suite.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*"; }

# -- Debian packages ---------------------------------------------------------------------
debs=(tshark tcpdump tcpreplay iproute2 chromium fonts-noto-cjk unzip curl maven openjdk-17-jdk-headless)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo_cmd debconf-set-selections
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# -- Python --------------------------------------------------------------------------------
log "python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"
export PATH="$root/.venv/bin:$PATH"

log "ruff"
ruff check .

log "rule pack: icsmon rules check, sigma check"
icsmon rules check rules/
sigma check -i -c detectors/sigma/sigma-validation.yml rules/

# -- services --------------------------------------------------------------------------
if [ -x deploy/services.sh ]; then
  log "starting Kafka and Elasticsearch (deploy/services.sh)"
  trap 'deploy/services.sh stop || true' EXIT
  deploy/services.sh start
fi

# -- tests -----------------------------------------------------------------------------
log "pytest"
pytest -q -p no:cacheprovider "$@"
