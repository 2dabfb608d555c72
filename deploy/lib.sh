# Shared helpers for deploy/*.sh (sourced, not run).
# Layout: downloads under deploy/.cache (and the Maven repository), state under deploy/run
# (or $ICSMON_RUN_DIR): config, data, logs and the pid file of each service.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$DEPLOY_DIR")"
CACHE_DIR="${ICSMON_CACHE_DIR:-$DEPLOY_DIR/.cache}"
RUN_DIR="${ICSMON_RUN_DIR:-$DEPLOY_DIR/run}"
# Maven's local repository, given to every mvn call (-Dmaven.repo.local): left to itself Maven
# takes the account's home from the password database, not $HOME, so with sudo keeping HOME
# or a service account the zip would be fetched to one folder and looked for in another.
MAVEN_REPO="${ICSMON_MAVEN_REPO:-$HOME/.m2/repository}"

if [[ -z "${ICSMON_PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then ICSMON_PYTHON="$REPO_DIR/.venv/bin/python"; else ICSMON_PYTHON=python3; fi
fi

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_alive PIDFILE MARKER: true when the pid in PIDFILE runs a command line containing MARKER
# (so a stale pid reused by another process is never signalled).
pid_alive() {
  local pidfile=$1 marker=$2 pid
  [[ -s "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# stop_pid PIDFILE MARKER NAME GRACE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_pid() {
  local pidfile=$1 marker=$2 name=$3 grace=${4:-30} pid i
  if ! pid_alive "$pidfile" "$marker"; then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  pid=$(<"$pidfile")
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    [[ -d "/proc/$pid" ]] || break
    sleep 0.1
  done
  if [[ -d "/proc/$pid" ]]; then
    log "$name: still running after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while [[ -d "/proc/$pid" ]]; do sleep 0.1; done
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

# rss_mb PIDFILE: resident memory of the service, in MiB.
rss_mb() {
  local pid
  pid=$(<"$1")
  awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$pid/status" 2>/dev/null
}

# show_log FILE: the end of a service log, printed when a start fails.
show_log() {
  log "---- last 60 lines of $1 ----"
  tail -n 60 "$1" >&2 2>/dev/null || log "(no log at $1)"
  log "---- end of $1 ----"
}

now_s() { date +%s.%N; }

# `start --tls DIR` of a service script: DIR as an absolute path, once it holds every named
# file (other actions take DIR as given). Prints the path; exits with one error line.
tls_dir() {
  local service="$1" action="$2" given="$3" dir f
  shift 3
  if [[ "$action" != start ]]; then
    printf '%s\n' "$given"
    return 0
  fi
  [[ -n "$given" ]] || die "usage: $0 start --tls DIR"
  dir="$(cd "$given" && pwd)" || die "no folder $given"
  for f in "$@"; do
    [[ -s "$dir/$f" ]] || die "$service: $dir/$f is missing (see the top of $0)"
  done
  printf '%s\n' "$dir"
}
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN {printf "%.1f", b - a}'; }
