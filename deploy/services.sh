#!/usr/bin/env bash
# Start, stop or check both services the pipeline needs, on 127.0.0.1:
#   Apache Kafka (deploy/kafka.sh) on :9092 and Elasticsearch (deploy/elasticsearch.sh) on :9200.
#   deploy/services.sh start | stop | status | reset
# Kafka and Elasticsearch start in parallel; start fails (non-zero, with the failing service's
# log printed by its script) unless both answer within their time limits.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${1:-}" in
  start)
    "$DIR/kafka.sh" start & kafka_job=$!
    "$DIR/elasticsearch.sh" start & es_job=$!
    rc=0
    wait "$kafka_job" || rc=1
    wait "$es_job" || rc=1
    if ((rc)); then
      echo "services: start failed; stopping what did start" >&2
      "$DIR/kafka.sh" stop || true
      "$DIR/elasticsearch.sh" stop || true
      exit 1
    fi
    ;;
  stop)
    rc=0
    "$DIR/kafka.sh" stop || rc=1
    "$DIR/elasticsearch.sh" stop || rc=1
    exit "$rc"
    ;;
  status)
    rc=0
    "$DIR/kafka.sh" status || rc=1
    "$DIR/elasticsearch.sh" status || rc=1
    exit "$rc"
    ;;
  reset)
    "$DIR/kafka.sh" reset
    "$DIR/elasticsearch.sh" reset
    ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
