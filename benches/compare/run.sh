#!/usr/bin/env bash
# Side by side: ringbroker (`ringbrokerd bench`) against nats-server (core and
# JetStream), RabbitMQ, Redis and, when Java is present, Kafka in KRaft mode, on this
# machine, in the same run, interleaved round by round. Each peer is measured with its
# own standard tool (`nats bench`, RabbitMQ PerfTest, `redis-benchmark`, Kafka's
# ProducerPerformance); each row says which durability it has.
#
# Usage (Debian, as root or with sudo; not for CI):
#   benches/compare/run.sh [--rounds 3] [--seconds 5] [--out DIR] [--skip nats,rabbitmq,redis,kafka]
#
# Installs what is missing (apt: rabbitmq-server redis-server, and maven when Java is
# there; go install: nats-server and the nats CLI; maven: PerfTest and Kafka jars),
# starts every server on 127.0.0.1 under DIR, and stops each one it started by its
# process id when it exits, however it exits. Writes DIR/compare.md (medians and
# ratios) and DIR/raw/ (every tool's own output). See benches/compare/README.md.

set -euo pipefail

ROUNDS=3
SECONDS_PER_RUN=5
OUT=""
SKIP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --skip) SKIP="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$REPO/target/compare-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT/raw" "$OUT/bin" "$OUT/data"
RESULTS="$OUT/results.tsv"   # round, workload, system, durability, msgs/s, p99 µs or -, lost %
: > "$RESULTS"

LOG_TAG=compare
# shellcheck source=../lib/servers.sh
. "$REPO/benches/lib/servers.sh"

skipped() { case ",$SKIP," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:--}" >> "$RESULTS"; }
# The first "<number> msgs/sec" on a line matching $2 in file $1, without commas.
rate_of() { grep -E "$2" "$1" | grep -oE '[0-9,.]+ msgs/sec' | head -1 | tr -d ', ' | sed 's/msgs\/sec//'; }

# ---------------------------------------------------------------------------------
# Install

install_tools() {
    if [ ! -f /etc/debian_version ]; then log "not Debian: install the peers yourself"; fi
    local apt=()
    skipped rabbitmq || command -v rabbitmq-server >/dev/null || apt+=(rabbitmq-server)
    skipped redis || command -v redis-server >/dev/null || apt+=(redis-server redis-tools)
    if command -v java >/dev/null && ! skipped kafka && ! command -v mvn >/dev/null; then apt+=(maven); fi
    if ! skipped rabbitmq && ! command -v java >/dev/null; then
        log "no Java: RabbitMQ PerfTest needs one; installing default-jre-headless and maven"
        apt+=(default-jre-headless maven)
    fi
    if [ ${#apt[@]} -gt 0 ]; then
        apt_install_quietly "${apt[@]}"
    fi
    if ! skipped nats; then
        export GOBIN="$OUT/bin"
        [ -x "$GOBIN/nats-server" ] || go install github.com/nats-io/nats-server/v2@latest
        [ -x "$GOBIN/nats" ] || go install github.com/nats-io/natscli/nats@latest
    fi
    if { ! skipped rabbitmq || ! skipped kafka; } && command -v java >/dev/null && command -v mvn >/dev/null; then
        fetch_jars || { log "cannot fetch the Java peers' jars: RabbitMQ and Kafka skipped"; SKIP="$SKIP,rabbitmq,kafka"; }
    fi
    (cd "$REPO" && cargo build --release -q -p ringbrokerd)
    RB="$REPO/target/release/ringbrokerd"
}

# PerfTest and Kafka (broker, tools) with their dependencies, from Maven Central.
fetch_jars() {
    [ -d "$OUT/jars" ] && { JARS="$OUT/jars"; return 0; }
    cat > "$OUT/pom.xml" <<'EOF'
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.compare</groupId><artifactId>peers</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>com.rabbitmq</groupId><artifactId>perf-test</artifactId><version>2.22.1</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>3.9.0</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>3.9.0</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
EOF
    mvn -q -f "$OUT/pom.xml" dependency:copy-dependencies -DoutputDirectory="$OUT/jars.part" >&2 || return 1
    mv "$OUT/jars.part" "$OUT/jars"
    JARS="$OUT/jars"
}

# ---------------------------------------------------------------------------------
# Workloads: one function per (workload, system); each records one row.

# ringbrokerd bench against the daemon; $1 round, $2 workload, $3 durability, rest args.
rb() {
    local round=$1 workload=$2 durability=$3; shift 3
    local raw="$OUT/raw/r$round-$workload-ringbroker.json"
    if "$RB" bench "$@" --url "$RB_URL" -d "$SECONDS_PER_RUN" --json > "$raw" 2>>"$OUT/raw/bench.err"; then
        python3 - "$raw" "$round" "$workload" "$durability" >> "$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
p99 = r["latency_us"]["p99"] if r.get("latency_us") else "-"
lost = f"{100 * r['lost'] / r['expected']:.1f}" if r["expected"] else "-"
print(f"{sys.argv[2]}\t{sys.argv[3]}\tringbroker\t{sys.argv[4]}\t{r['msgs_per_s']:.0f}\t{p99}\t{lost}")
EOF
    else
        record "$round" "$workload" ringbroker "$durability" FAILED -
    fi
}

nats_pubsub() {   # round size
    local raw="$OUT/raw/r$1-pubsub-$2-nats.txt" msgs=$(( 2000000 * SECONDS_PER_RUN / 5 ))
    "$OUT/bin/nats" -s "$NATS_URL" bench sub bench.ps --msgs "$msgs" --size "$2" --no-progress > "$raw.sub" 2>&1 &
    local sub=$!; PIDS+=($sub); sleep 0.5
    "$OUT/bin/nats" -s "$NATS_URL" bench pub bench.ps --msgs "$msgs" --size "$2" --no-progress > "$raw" 2>&1 || true
    wait "$sub" || true
    record "$1" "pubsub-$2B" nats "none: at most once" "$(rate_of "$raw.sub" 'stats' || echo -)" -
}

nats_rpc() {
    local raw="$OUT/raw/r$1-rpc-nats.txt"
    "$OUT/bin/nats" -s "$NATS_URL" bench service serve bench.rpc --no-progress > "$raw.serve" 2>&1 &
    local serve=$!; PIDS+=($serve); sleep 0.5
    "$OUT/bin/nats" -s "$NATS_URL" bench service request bench.rpc --msgs 50000 --size 64 --no-progress > "$raw" 2>&1 || true
    kill "$serve" 2>/dev/null || true
    local rate p99
    rate=$(rate_of "$raw" 'stats' || echo -)
    p99=$(grep -oE 'P99: [0-9,.]+us' "$raw" | head -1 | sed -E 's/P99: ([0-9,.]+)us/\1/' | tr -d , || echo -)
    record "$1" request-reply nats "none: at most once" "$rate" "${p99:--}"
}

nats_js_publish() {
    local raw="$OUT/raw/r$1-durable-nats.txt"
    "$OUT/bin/nats" -s "$NATS_URL" bench js pub async bench.js --create --purge --storage file --batch 500 \
        --msgs 500000 --size 256 --no-progress > "$raw" 2>&1 || true
    # JetStream acknowledges once written, fsyncing every 2 minutes by default.
    record "$1" durable-publish-256B nats-jetstream "none: acked once written, fsync every 2 min" "$(rate_of "$raw" 'stats' || echo -)" -
}

rabbit_work_queue() {
    local raw="$OUT/raw/r$1-workqueue-rabbitmq.txt"
    java -cp "$JARS/*" com.rabbitmq.perf.PerfTest --uri "$RABBIT_URI" -x 1 -y 1 -s 256 \
        -f persistent -c 100 -q 100 -z "$SECONDS_PER_RUN" -u "compare-$1" --auto-delete true > "$raw" 2>&1 || true
    local rate; rate=$(grep -oE 'receiving rate avg: [0-9]+' "$raw" | grep -oE '[0-9]+$' || echo -)
    record "$1" work-queue-persistent rabbitmq "persistent: durable queue, persistent messages, confirms" "$rate" -
}

redis_rows() {
    local raw="$OUT/raw/r$1-redis.txt" payload; payload=$(head -c 256 /dev/zero | tr '\0' x)
    redis-cli -p "$REDIS_PORT" subscribe bench.ps > /dev/null 2>&1 &
    local sub=$!; PIDS+=($sub); sleep 0.3
    redis-benchmark -p "$REDIS_PORT" -q -n 1000000 -P 100 publish bench.ps "$payload" > "$raw.pub" 2>&1 || true
    kill "$sub" 2>/dev/null || true
    redis-benchmark -p "$REDIS_PORT" -q -n 1000000 -P 100 xadd bench.x '*' f "$payload" > "$raw.xadd" 2>&1 || true
    redis-cli -p "$REDIS_PORT" del bench.x > /dev/null || true
    local rps='[0-9.]+ requests per second'
    record "$1" pubsub-256B redis "none: at most once" "$(grep -oE "$rps" "$raw.pub" | tail -1 | grep -oE '^[0-9.]+' || echo -)" -
    record "$1" durable-publish-256B redis "none: XADD, appendonly no" "$(grep -oE "$rps" "$raw.xadd" | tail -1 | grep -oE '^[0-9.]+' || echo -)" -
}

kafka_publish() {
    local raw="$OUT/raw/r$1-kafka.txt"
    java -cp "$JARS/*" org.apache.kafka.tools.ProducerPerformance --topic "compare-$1" \
        --num-records 2000000 --record-size 256 --throughput -1 \
        --producer-props bootstrap.servers="127.0.0.1:$KAFKA_PORT" acks=all linger.ms=5 batch.size=262144 \
        > "$raw" 2>&1 || true
    local rate; rate=$(tail -1 "$raw" | grep -oE '[0-9.]+ records/sec' | grep -oE '^[0-9.]+' || echo -)
    record "$1" durable-publish-256B kafka "none: acks=all, page cache, no fsync per ack" "$rate" -
}

round() {
    local r=$1
    log "round $r of $ROUNDS"
    # Peers first in odd rounds, ringbroker first in even ones.
    local order=(peers ringbroker); [ $(( r % 2 )) -eq 0 ] && order=(ringbroker peers)
    for side in "${order[@]}"; do
        if [ "$side" = ringbroker ]; then
            rb "$r" pubsub-16B "none: at most once" pubsub -s 16 --allow-loss
            rb "$r" pubsub-256B "none: at most once" pubsub -s 256 --allow-loss
            rb "$r" request-reply "none: at most once" request-reply -s 64
            rb "$r" durable-publish-256B "always: fdatasync before ack, group commit" stream-publish -s 256 -b 1000 -p 2 --durability always
            rb "$r" durable-publish-256B "none: acked once written" stream-publish -s 256 -b 1000 -p 2 --durability none
            rb "$r" work-queue-persistent "persistent: durable queue, persistent messages, confirms" work-queue -s 256 --prefetch 100
        else
            skipped nats || { nats_pubsub "$r" 16; nats_pubsub "$r" 256; nats_rpc "$r"; nats_js_publish "$r"; }
            skipped rabbitmq || [ -z "${RABBIT_URI:-}" ] || rabbit_work_queue "$r"
            skipped redis || redis_rows "$r"
            skipped kafka || [ -z "${KAFKA_PORT:-}" ] || kafka_publish "$r"
        fi
    done
}

# ---------------------------------------------------------------------------------

install_tools
start_ringbroker
skipped nats || start_nats
skipped redis || start_redis
if ! skipped rabbitmq && [ -n "${JARS:-}" ]; then start_rabbitmq; fi
if ! skipped kafka && [ -n "${JARS:-}" ]; then start_kafka; fi
for r in $(seq 1 "$ROUNDS"); do round "$r"; done
python3 "$REPO/benches/compare/table.py" "$RESULTS" "$(nproc)" > "$OUT/compare.md"
cat "$OUT/compare.md"
log "table: $OUT/compare.md; raw outputs: $OUT/raw/"
