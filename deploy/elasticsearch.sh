#!/usr/bin/env bash
# Elasticsearch (single node, security off) on 127.0.0.1:9200, from Elastic's own minimal
# server build on Maven Central (org.elasticsearch.distribution.integ-test-zip:elasticsearch),
# run as the dedicated system user icsmon-es (Elasticsearch refuses to run as root).
#   deploy/elasticsearch.sh start | stop | status | reset (stop and delete the data)
#   deploy/elasticsearch.sh start --tls DIR | stop --tls | status --tls | reset --tls
#     a second, separate node with security on: HTTPS only, on 127.0.0.1:9230 (transport
#     :9330), data in deploy/run/elasticsearch-tls. DIR holds ca.pem (the CA clients trust),
#     server.pem (the node's certificate chain and its unencrypted PKCS#8 key, for 127.0.0.1;
#     the same layout as deploy/kafka.sh --tls) and elastic-password (the password of the
#     built-in superuser elastic, set from the keystore's bootstrap.password when the node
#     first starts on empty data: reset --tls before starting with another password).
#     API keys live in the security index, whose analyzer needs analysis components the
#     minimal build lacks: this mode runs a hard-linked copy of the build with the small
#     plugin in deploy/es-security-analysis, compiled here with the JDK's javac (first start).
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
SEC_DIST="$CACHE_DIR/elasticsearch-$ES_VERSION-security"
ACTION="${1:-}"
TLS_DIR=""
if [[ "${2:-}" == "--tls" ]]; then
  TLS_DIR="$(tls_dir elasticsearch "$ACTION" "${3:-}" ca.pem server.pem elastic-password)"
  TLS=1
  ES_HOME="$SEC_DIST"
  HOME_E="$RUN_DIR/elasticsearch-tls"
  HTTP_PORT=9230
  TRANSPORT_PORT=9330
  NAME=icsmon-tls
  URL="https://127.0.0.1:$HTTP_PORT"
else
  TLS=""
  ES_HOME="$DIST"
  HOME_E="$RUN_DIR/elasticsearch"
  HTTP_PORT=9200
  TRANSPORT_PORT=9300
  NAME=icsmon
  URL="http://127.0.0.1:$HTTP_PORT"
fi
PIDFILE="$HOME_E/elasticsearch.pid"
LOGFILE="$HOME_E/logs/$NAME.log"
MARKER="org.elasticsearch.bootstrap.Elasticsearch"
# Kept beside the node (TLS mode), so status and the health probe need no DIR.
CERTS="$HOME_E/config/certs"
PASSWORD_FILE="$HOME_E/elastic-password"
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
    mvn -B -q -Dmaven.repo.local="$MAVEN_REPO" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:get -Dartifact="$ARTIFACT" -Dtransitive=false \
      || die "Maven could not fetch $ARTIFACT (see above)"
  fi
  command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
  rm -rf "$DIST" "$DIST.tmp" && mkdir -p "$DIST.tmp"
  unzip -q "$ZIP" -d "$DIST.tmp" || die "could not unpack $ZIP"
  mv "$DIST.tmp/elasticsearch-$ES_VERSION" "$DIST" && rmdir "$DIST.tmp"
  touch "$DIST/.complete"
}

# The build plus deploy/es-security-analysis as a plugin, for the TLS node only (the plain
# node on 9200 keeps the untouched build). Hard links: no second copy of the files on disk.
fetch_security() {
  local jhome src="$DEPLOY_DIR/es-security-analysis" tmp="$SEC_DIST.tmp" sum
  # Rebuilt when the plugin's sources change (their checksum is the marker's content).
  sum=$(cat "$src/plugin-descriptor.properties" "$src"/src/org/icsmon/esanalysis/*.java | sha256sum | cut -d' ' -f1)
  [[ -f "$SEC_DIST/.complete" && "$(<"$SEC_DIST/.complete")" == "$sum" ]] && return 0
  jhome=$(pick_java_home)
  [[ -x "$jhome/bin/javac" && -x "$jhome/bin/jar" ]] || die "no javac in $jhome: install a JDK (openjdk-17-jdk-headless)"
  log "elasticsearch: building the security analysis plugin (first TLS start only)"
  rm -rf "$SEC_DIST" "$tmp"
  cp -al "$DIST" "$tmp" || cp -a "$DIST" "$tmp"
  rm -f "$tmp/.complete"
  local plugin="$tmp/plugins/icsmon-security-analysis" classes="$tmp/.plugin-classes"
  mkdir -p "$plugin" "$classes"
  "$jhome/bin/javac" --release 17 -nowarn -cp "$DIST/lib/*" -d "$classes" "$src"/src/org/icsmon/esanalysis/*.java \
    || die "elasticsearch: could not compile $src"
  "$jhome/bin/jar" --create --file "$plugin/icsmon-security-analysis-$ES_VERSION.jar" -C "$classes" . \
    || die "elasticsearch: could not package $src"
  rm -rf "$classes"
  sed "s/@VERSION@/$ES_VERSION/g" "$src/plugin-descriptor.properties" >"$plugin/plugin-descriptor.properties"
  mv "$tmp" "$SEC_DIST"
  echo "$sum" >"$SEC_DIST/.complete"
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
  cp -r "$ES_HOME/config/." "$HOME_E/config/"
  [[ -n "$TLS" ]] && install_certs
  cat >"$HOME_E/config/elasticsearch.yml" <<CONF
cluster.name: $NAME
node.name: $NAME-1
network.host: 127.0.0.1
http.port: $HTTP_PORT
transport.port: $TRANSPORT_PORT
discovery.type: single-node
path.data: $HOME_E/data
path.logs: $HOME_E/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
# posture summaries over past (unchanging) daily indices are served from this cache: the
# default 1 % of the heap was full and evicting at 10 million alerts (bench/README.md)
indices.requests.cache.size: 10%
$(security_config)
CONF
  chown -R "$ES_USER:" "$HOME_E"
  if [[ -n "$TLS" ]]; then
    chmod 700 "$HOME_E/config"  # the key and the keystore: the service user only
    write_keystore
  fi
}

install_certs() {
  # Elasticsearch reads key material only from its config folder: split DIR/server.pem there.
  mkdir -p "$CERTS"
  cp "$TLS_DIR/ca.pem" "$CERTS/ca.pem"
  awk '/-----BEGIN [A-Z ]*PRIVATE KEY-----/,/-----END [A-Z ]*PRIVATE KEY-----/' "$TLS_DIR/server.pem" >"$CERTS/server.key"
  awk '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/' "$TLS_DIR/server.pem" >"$CERTS/server.crt"
  [[ -s "$CERTS/server.key" && -s "$CERTS/server.crt" ]] || die "elasticsearch: $TLS_DIR/server.pem needs a PEM key and certificate"
  chmod 600 "$CERTS/server.key"
  install -m 600 "$TLS_DIR/elastic-password" "$PASSWORD_FILE"
}

security_config() {
  if [[ -z "$TLS" ]]; then
    echo "xpack.security.enabled: false"
    return
  fi
  # One node on loopback (single-node discovery): the transport layer needs no TLS; clients
  # get HTTPS only. API keys are on by default with security; said here for the reader.
  cat <<CONF
xpack.security.enabled: true
xpack.security.authc.api_key.enabled: true
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.certificate: certs/server.crt
xpack.security.http.ssl.key: certs/server.key
xpack.security.http.ssl.certificate_authorities: [certs/ca.pem]
xpack.security.transport.ssl.enabled: false
CONF
}

# The elastic user's password, as the keystore's bootstrap.password (read from stdin: it never
# appears on a command line).
write_keystore() {
  local jhome
  jhome=$(pick_java_home)
  rm -f "$HOME_E/config/elasticsearch.keystore"
  runuser -u "$ES_USER" -- env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$HOME_E/config" \
    "$ES_HOME/bin/elasticsearch-keystore" create >"$HOME_E/keystore.log" 2>&1 \
    || { show_log "$HOME_E/keystore.log"; die "elasticsearch: keystore create failed"; }
  tr -d '\n' <"$PASSWORD_FILE" | runuser -u "$ES_USER" -- env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$HOME_E/config" \
    "$ES_HOME/bin/elasticsearch-keystore" add --stdin --force bootstrap.password >>"$HOME_E/keystore.log" 2>&1 \
    || { show_log "$HOME_E/keystore.log"; die "elasticsearch: could not set bootstrap.password"; }
}

health_ok() {
  if [[ -z "$TLS" ]]; then
    curl -fsS -m 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=2s" >/dev/null 2>&1
    return
  fi
  [[ -r "$PASSWORD_FILE" ]] || return 1
  # The credentials go through curl's config on stdin, not its command line.
  printf 'user = "elastic:%s"\n' "$(tr -d '\n' <"$PASSWORD_FILE")" \
    | curl -fsS -m 5 -K - --cacert "$CERTS/ca.pem" \
      "$URL/_cluster/health?wait_for_status=yellow&timeout=2s" >/dev/null 2>&1
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then
    log "elasticsearch: already running (pid $(<"$PIDFILE"))"
    return 0
  fi
  local t0 jhome
  t0=$(now_s)
  fetch
  [[ -n "$TLS" ]] && fetch_security
  ensure_user
  jhome=$(pick_java_home)
  mkdir -p "$RUN_DIR"
  write_config
  # The user must be able to reach its folders through the checkout's parents.
  runuser -u "$ES_USER" -- test -w "$HOME_E/data" || die "user $ES_USER cannot write $HOME_E/data (check the parent folders' permissions)"
  rm -f "$PIDFILE"
  runuser -u "$ES_USER" -- env ES_JAVA_HOME="$jhome" ES_PATH_CONF="$HOME_E/config" ES_TMPDIR="$HOME_E/tmp" \
    ES_JAVA_OPTS="-Xms${ES_HEAP:-512m} -Xmx${ES_HEAP:-512m}" \
    "$ES_HOME/bin/elasticsearch" -d -p "$PIDFILE" >"$HOME_E/stdout.log" 2>&1 </dev/null \
    || { show_log "$HOME_E/stdout.log"; show_log "$LOGFILE"; die "elasticsearch: start-up failed"; }
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
  log "elasticsearch $ES_VERSION: up on $URL${TLS:+ (TLS, security on)} (pid $(<"$PIDFILE"), $(elapsed "$t0")s, RSS $(rss_mb "$PIDFILE") MiB, java $jhome)"
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

case "$ACTION" in
  start) start ;;
  stop) stop_pid "$PIDFILE" "$MARKER" elasticsearch 60 ;;
  status) status ;;
  reset) stop_pid "$PIDFILE" "$MARKER" elasticsearch 60; rm -rf "$HOME_E"; log "elasticsearch: data deleted" ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|reset|fetch [--tls DIR]" >&2; exit 2 ;;
esac
