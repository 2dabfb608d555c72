#!/usr/bin/env bash
# Apache Kafka 4.4 (KRaft, one combined broker+controller) on 127.0.0.1:9092, from the Maven
# Central jars listed in deploy/kafka/pom.xml.
#   deploy/kafka.sh start | stop | status | reset (stop and delete the data)
#   deploy/kafka.sh start --tls DIR | stop --tls | status --tls | reset --tls
#     a second, separate broker with TLS and SASL/SCRAM-SHA-512 only, on 127.0.0.1:9192
#     (controller :9193), data in deploy/run/kafka-tls. DIR holds ca.pem (the CA clients
#     trust), server.pem (the broker's certificate chain and its unencrypted PKCS#8 key, for
#     127.0.0.1) and scram-users (lines "NAME PASSWORD"; the first is the broker's own user).
#     Users are created when the storage is formatted (first start after reset).
# Environment: KAFKA_JAVA_HOME (default: Java 17), KAFKA_HEAP (default -Xms256m -Xmx512m),
# ICSMON_KAFKA_WAIT (seconds to wait for metadata, default 90).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=4.4.0
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION-libs"
ACTION="${1:-}"
TLS_DIR=""
if [[ "${2:-}" == "--tls" ]]; then
  TLS_DIR="$(tls_dir kafka "$ACTION" "${3:-}" ca.pem server.pem scram-users)"
  HOME_K="$RUN_DIR/kafka-tls"
  CLIENT_PORT=9192
  CONTROLLER_PORT=9193
else
  HOME_K="$RUN_DIR/kafka"
  CLIENT_PORT=9092
  CONTROLLER_PORT=9093
fi
DATA="$HOME_K/data"
PIDFILE="$HOME_K/kafka.pid"
LOGFILE="$HOME_K/kafka.log"
MARKER="kafka.Kafka"
WAIT_S="${ICSMON_KAFKA_WAIT:-90}"

pick_java() {
  local candidates=("${KAFKA_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/temurin-25-jdk-amd64)
  local c
  for c in "${candidates[@]}"; do
    [[ -n "$c" && -x "$c/bin/java" ]] && { echo "$c/bin/java"; return; }
  done
  command -v java || die "no Java found: install a JDK 17+ or set KAFKA_JAVA_HOME"
}

fetch() {
  # The jar folder is complete once the marker exists; Maven's own repository caches downloads.
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  log "kafka: resolving jars with Maven (first run only)"
  rm -rf "$LIBS"
  mvn -B -q -Dmaven.repo.local="$MAVEN_REPO" -f "$DEPLOY_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$LIBS" -DincludeScope=runtime \
    || die "Maven could not fetch the Kafka jars (see above)"
  touch "$LIBS/.complete"
}

listener_config() {
  if [[ -z "$TLS_DIR" ]]; then
    cat <<CONF
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
CONF
    return
  fi
  local admin_user admin_pass
  read -r admin_user admin_pass <"$TLS_DIR/scram-users"
  # Clients and the broker itself speak only SASL_SSL; the controller listener stays on
  # loopback, used by this one process.
  cat <<CONF
listeners=SASL_SSL://127.0.0.1:$CLIENT_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$CLIENT_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$admin_user" password="$admin_pass";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
ssl.client.auth=none
ssl.enabled.protocols=TLSv1.3,TLSv1.2
CONF
}

write_config() {
  mkdir -p "$DATA"
  cat >"$HOME_K/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
$(listener_config)
controller.listener.names=CONTROLLER
log.dirs=$DATA
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
CONF
  cat >"$HOME_K/log4j2.properties" <<CONF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $LOGFILE
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
logger.raft.name = org.apache.kafka.raft
logger.raft.level = warn
CONF
}

# The broker is ready when a client gets cluster metadata (a broker list) from it (over
# SASL_SSL with the first SCRAM user in TLS mode).
metadata_ok() {
  PROBE_PORT=$CLIENT_PORT PROBE_TLS="$TLS_DIR" "$ICSMON_PYTHON" - <<'PY' 2>/dev/null
import os, sys
from kafka import KafkaAdminClient
opts = {}
if os.environ["PROBE_TLS"]:
    user, password = open(os.path.join(os.environ["PROBE_TLS"], "scram-users")).readline().split()[:2]
    opts = dict(security_protocol="SASL_SSL", ssl_cafile=os.path.join(os.environ["PROBE_TLS"], "ca.pem"),
                sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user, sasl_plain_password=password)
try:
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{os.environ['PROBE_PORT']}",
                             request_timeout_ms=3000, client_id="icsmon-deploy-probe", **opts)
    brokers = admin.describe_cluster().get("brokers", [])
    admin.close()
except Exception:
    sys.exit(1)
sys.exit(0 if brokers else 1)
PY
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then
    log "kafka: already running (pid $(<"$PIDFILE"))"
    return 0
  fi
  local t0 java
  t0=$(now_s)
  fetch
  java=$(pick_java)
  write_config
  local cp="$LIBS/*"
  if [[ ! -f "$DATA/meta.properties" ]]; then
    # Format only an empty log.dirs; --standalone makes this node the single KRaft voter.
    rm -rf "$DATA" && mkdir -p "$DATA"
    local cluster_id
    cluster_id=$("$java" -cp "$cp" kafka.tools.StorageTool random-uuid)
    local scram=() name pass
    if [[ -n "$TLS_DIR" ]]; then
      while read -r name pass; do
        [[ -n "$name" ]] && scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$pass]")
      done <"$TLS_DIR/scram-users"
    fi
    "$java" -cp "$cp" -Dlog4j2.configurationFile="$HOME_K/log4j2.properties" kafka.tools.StorageTool \
      format --standalone -t "$cluster_id" -c "$HOME_K/server.properties" "${scram[@]}" >"$HOME_K/format.log" 2>&1 \
      || { show_log "$HOME_K/format.log"; die "kafka: storage format failed"; }
  fi
  : >"$LOGFILE"
  # setsid: the broker outlives this script and does not get the caller's terminal signals.
  setsid "$java" ${KAFKA_HEAP:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HOME_K/log4j2.properties" -cp "$cp" \
    "$MARKER" "$HOME_K/server.properties" >>"$HOME_K/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + WAIT_S))
  until metadata_ok; do
    if ! pid_alive "$PIDFILE" "$MARKER"; then
      show_log "$HOME_K/stdout.log"; show_log "$LOGFILE"; die "kafka: the broker exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      show_log "$LOGFILE"; stop_pid "$PIDFILE" "$MARKER" kafka 10
      die "kafka: no metadata from 127.0.0.1:$CLIENT_PORT within ${WAIT_S}s"
    fi
    sleep 0.5
  done
  log "kafka: up on 127.0.0.1:$CLIENT_PORT${TLS_DIR:+ (SASL_SSL)} (pid $(<"$PIDFILE"), $(elapsed "$t0")s, RSS $(rss_mb "$PIDFILE") MiB)"
}

status() {
  if pid_alive "$PIDFILE" "$MARKER"; then
    if metadata_ok; then
      log "kafka: running (pid $(<"$PIDFILE"), RSS $(rss_mb "$PIDFILE") MiB), metadata OK"
    else
      log "kafka: process $(<"$PIDFILE") alive but no metadata on 127.0.0.1:$CLIENT_PORT"; return 1
    fi
  else
    log "kafka: not running"; return 3
  fi
}

case "$ACTION" in
  start) start ;;
  stop) stop_pid "$PIDFILE" "$MARKER" kafka 60 ;;
  status) status ;;
  reset) stop_pid "$PIDFILE" "$MARKER" kafka 60; rm -rf "$HOME_K"; log "kafka: data deleted" ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|reset|fetch [--tls DIR]" >&2; exit 2 ;;
esac
