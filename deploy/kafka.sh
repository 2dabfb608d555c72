#!/usr/bin/env bash
# Apache Kafka 4.4 (KRaft, one combined broker+controller) on 127.0.0.1:9092, from the Maven
# Central jars listed in deploy/kafka/pom.xml.
#   deploy/kafka.sh start | stop | status | reset (stop and delete the data)
# Environment: KAFKA_JAVA_HOME (default: Java 17), KAFKA_HEAP (default -Xms256m -Xmx512m),
# ICSMON_KAFKA_WAIT (seconds to wait for metadata, default 90).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=4.4.0
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION-libs"
HOME_K="$RUN_DIR/kafka"
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
  mvn -B -q -f "$DEPLOY_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$LIBS" -DincludeScope=runtime \
    || die "Maven could not fetch the Kafka jars (see above)"
  touch "$LIBS/.complete"
}

write_config() {
  mkdir -p "$DATA"
  cat >"$HOME_K/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
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

# The broker is ready when a client gets cluster metadata (a broker list) from it.
metadata_ok() {
  "$ICSMON_PYTHON" - <<'PY' 2>/dev/null
import sys
from kafka import KafkaAdminClient
try:
    admin = KafkaAdminClient(bootstrap_servers="127.0.0.1:9092", request_timeout_ms=3000,
                             client_id="icsmon-deploy-probe")
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
    "$java" -cp "$cp" -Dlog4j2.configurationFile="$HOME_K/log4j2.properties" kafka.tools.StorageTool \
      format --standalone -t "$cluster_id" -c "$HOME_K/server.properties" >"$HOME_K/format.log" 2>&1 \
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
      die "kafka: no metadata from 127.0.0.1:9092 within ${WAIT_S}s"
    fi
    sleep 0.5
  done
  log "kafka: up on 127.0.0.1:9092 (pid $(<"$PIDFILE"), $(elapsed "$t0")s, RSS $(rss_mb "$PIDFILE") MiB)"
}

status() {
  if pid_alive "$PIDFILE" "$MARKER"; then
    if metadata_ok; then
      log "kafka: running (pid $(<"$PIDFILE"), RSS $(rss_mb "$PIDFILE") MiB), metadata OK"
    else
      log "kafka: process $(<"$PIDFILE") alive but no metadata on 127.0.0.1:9092"; return 1
    fi
  else
    log "kafka: not running"; return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid "$PIDFILE" "$MARKER" kafka 60 ;;
  status) status ;;
  reset) stop_pid "$PIDFILE" "$MARKER" kafka 60; rm -rf "$HOME_K"; log "kafka: data deleted" ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|reset|fetch" >&2; exit 2 ;;
esac
