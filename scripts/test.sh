#!/usr/bin/env bash
# Installs everything the tests need (Debian packages, a Python venv with the project and its
# test extras, Kafka and Elasticsearch from Maven Central) and runs the whole suite.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*"; }

# -- Debian packages ---------------------------------------------------------------------
debs=(tshark tcpdump tcpreplay iproute2 chromium fonts-noto-cjk unzip curl maven openjdk-17-jdk-headless
      libpango-1.0-0 libpangoft2-1.0-0 poppler-utils)  # the last three: PDF reports and reading them back
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
ruff format --check .

log "mypy (every package; pyproject.toml [tool.mypy])"
mypy

log "dependency audit: pip-audit on the installed environment"
# Fails the run on a known vulnerability. When the vulnerability service cannot be reached or
# does not know the packages (an offline mirror), says so and goes on: that is not a pass.
audit_rc=0
audit_out=$(pip-audit --local --skip-editable --progress-spinner off 2>&1) || audit_rc=$?
grep -v "could not be audited" <<<"$audit_out" | grep -v "^Traceback\|^  \|^----\|^Name  " || true
audited_not=$(grep -c "could not be audited" <<<"$audit_out" || true)
if grep -q "known vulnerabilit" <<<"$audit_out" && ! grep -q "No known vulnerabilities" <<<"$audit_out"; then
  echo "pip-audit: known vulnerabilities in the installed packages (above): upgrade them" >&2
  exit 1
elif [ "$audit_rc" -ne 0 ]; then
  echo "WARNING: pip-audit could not run (exit $audit_rc): $(tail -n 1 <<<"$audit_out")" >&2
  echo "WARNING: dependency audit NOT done (not fatal: the vulnerability service is unreachable from here)" >&2
elif [ "${audited_not:-0}" -gt 0 ]; then
  echo "WARNING: pip-audit could not audit $audited_not installed packages: the vulnerability" \
       "service (PyPI JSON API) does not know them; 'No known vulnerabilities' covers only the rest" >&2
fi

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
pytest -q -rs -p no:cacheprovider "$@"  # -rs: every skip with its reason
