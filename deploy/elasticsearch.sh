#!/usr/bin/env bash
# Elasticsearch (single node, security off) on 127.0.0.1:9200, from Elastic's own minimal
# server build on Maven Central (org.elasticsearch.distribution.integ-test-zip:elasticsearch),
# run as the dedicated system user icsmon-es (Elasticsearch refuses to run as root).
#   deploy/elasticsearch.sh start | stop | status | reset (stop and delete the data)
# Environment: ES_VERSION (default 8.19.21: no 9.x of this artifact is on Maven Central, see
# deploy/README.md), ES_JAVA_HOME (default: Temurin 25, else Java 17), ES_HEAP (default 512m),
# ICSMON_ES_WAIT (seconds to wait for health yellow, default 120).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ES_VERSION="${ES_VERSION:-8.19.21}"
ES_USER="${ICSMON_ES_USER:-icsmon-es}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip"
ZIP="$MAVEN_REPO/org/elasticsearch/distribution/integ-test-zip/elasticsearch/$ES_VERSION/elasticsearch-$ES_VERSION.zip"
DIST="$CACHE_DIR/elasticsearch-$ES_VERSION"
HOME_E="$RUN_DIR/elasticsearch"
PIDFILE="$HOME_E/elasticsearch.pid"
LOGFILE="$HOME_E/logs/icsmon.log"
MARKER="org.elasticsearch.bootstrap.Elasticsearch"
URL="http://127.0.0.1:9200"
WAIT_S="${ICSMON_ES_WAIT:-120}"

pick_java_home() {
  local c
  for c in "${ES_JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-17-openjdk-amd64; do
    [[ -n "$c" && -x "$c/bin/java" ]] && { echo "$c"; return; }
  done
  die "no JDK found: set ES_JAVA_HOME"
}

fetch() {
  [[ -f "$DIST/.complete" ]] && return 0
  if [[ ! -f "$ZIP" ]]; then
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    log "elasticsearch: fetching $ARTIFACT with Maven (first run only)"
    mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get -Dartifact="$ARTIFACT" -Dtransitive=false \
      || die "Maven could not fetch $ARTIFACT (see above)"
  fi
  command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
  rm -rf "$DIST" "$DIST.tmp" && mkdir -p "$DIST.tmp"
  unzip -q "$ZIP" -d "$DIST.tmp" || die "could not unpack $ZIP"
  mv "$DIST.tmp/elasticsearch-$ES_VERSION" "$DIST" && rmdir "$DIST.tmp"
  touch "$DIST/.complete"
}

ensure_user() {
  id -u "$ES_USER" >/dev/null 2>&1 && return 0
  [[ $EUID -eq 0 ]] || die "run as root once to create the system user $ES_USER"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$ES_USER"
  log "elasticsearch: created system user $ES_USER"
}

write_config() {
  mkdir -p "$HOME_E/config" "$HOME_E/data" "$HOME_E/logs" "$HOME_E/tmp"
  # The distribution's config folder supplies jvm.options and log4j2.properties; ours overrides
  # elasticsearch.yml. Settings of plugins absent from this build would abort start-up.
  cp -r "$DIST/config/." "$HOME_E/config/"
  cat >"$HOME_E/config/elasticsearch.yml" <<CONF
cluster.name: icsmon
node.name: icsmon-1
network.host: 127.0.0.1
http.port: 9200
transport.port: 9300
discovery.type: single-node
xpack.security.enabled: false
path.data: $HOME_E/data
path.logs: $HOME_E/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
CONF
  chown -R "$ES_USER:" "$HOME_E"
}

health_ok() {
  curl -fsS -m 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=2s" >/dev/null 2>&1
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then
    log "elasticsearch: already running (pid $(<"$PIDFILE"))"
    return 0
  fi
  local t0 jhome
  t0=$(now_s)
  fetch
  ensure_user
  jhome=$(pick_java_home)
  mkdir -p "$RUN_DIR"
  write_config
  # The user must be able to reach its folders through the checkout's parents.
  runuser -u "$ES_USER" -- test -w "$HOME_E/data" || die "user $ES_USER cannot write $HOME_E/data (check the parent folders' permissions)"
  rm -f "$PIDFILE"
  runuser -u "$ES_USER" -- env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$HOME_E/config" ES_TMPDIR="$HOME_E/tmp" \
    ES_JAVA_OPTS="-Xms${ES_HEAP:-512m} -Xmx${ES_HEAP:-512m}" \
    "$DIST/bin/elasticsearch" -d -p "$PIDFILE" >"$HOME_E/stdout.log" 2>&1 </dev/null \
    || { show_log "$HOME_E/stdout.log"; show_log "$HOME_E/logs/icsmon.log"; die "elasticsearch: start-up failed"; }
  local deadline=$((SECONDS + WAIT_S))
  until health_ok; do
    if [[ -s "$PIDFILE" ]] && ! pid_alive "$PIDFILE" "$MARKER"; then
      show_log "$LOGFILE"; die "elasticsearch: the node exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      show_log "$LOGFILE"; stop_pid "$PIDFILE" "$MARKER" elasticsearch 20
      die "elasticsearch: cluster health not yellow on $URL within ${WAIT_S}s"
    fi
    sleep 0.5
  done
  log "elasticsearch $ES_VERSION: up on $URL (pid $(<"$PIDFILE"), $(elapsed "$t0")s, RSS $(rss_mb "$PIDFILE") MiB, java $jhome)"
}

status() {
  if pid_alive "$PIDFILE" "$MARKER"; then
    if health_ok; then
      log "elasticsearch: running (pid $(<"$PIDFILE"), RSS $(rss_mb "$PIDFILE") MiB), health yellow or green"
    else
      log "elasticsearch: process $(<"$PIDFILE") alive but $URL is not healthy"; return 1
    fi
  else
    log "elasticsearch: not running"; return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid "$PIDFILE" "$MARKER" elasticsearch 60 ;;
  status) status ;;
  reset) stop_pid "$PIDFILE" "$MARKER" elasticsearch 60; rm -rf "$HOME_E"; log "elasticsearch: data deleted" ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|reset|fetch" >&2; exit 2 ;;
esac
