#!/usr/bin/env bash
# The language bindings against the official clients of the peer brokers, from the same
# language, in the same run: Python (ringbroker binding vs nats-py on nats-server and
# pika on RabbitMQ), Node (vs nats.js and amqplib) and Go (vs nats.go). Each language's
# program lives in benches/bindings/<lang>/ and is started through its `run` script;
# this script installs the peers, starts the servers and makes the table.
#
# Usage (Debian, as root; not for CI):
#   benches/bindings/run.sh [--rounds 3] [--seconds 5] [--out DIR] [--only python,node,go]
#                           [--skip nats,rabbitmq] [--pin-to-cores false]
#
# Installs what is missing (apt: rabbitmq-server; go install: nats-server), builds
# ringbrokerd (release), starts ringbrokerd, nats-server and RabbitMQ on 127.0.0.1 on
# free ports with their data under DIR, and stops each by its process id when it exits.
# ringbroker's shards (the daemon's and every embedded broker's) are not pinned to
# cores unless --pin-to-cores true: the clients share this machine's cores with them,
# and nats-server and RabbitMQ do not pin either.
# Rounds interleave: odd rounds run the languages in the order given, even rounds in
# reverse. Writes DIR/bindings.md (medians over rounds, ratios against the peer in the
# same language) and DIR/raw/. See benches/bindings/README.md.
#
# Contract with benches/bindings/<lang>/run: environment RINGBROKER_URL, NATS_URL,
# AMQP_URL (an empty value: skip that system), BENCH_SECONDS (cap per measurement),
# BENCH_PIN_TO_CORES (true|false: the embedded broker's pin_to_cores);
# one JSON object per line on stdout per measurement:
#   {"client": "ringbroker-embedded" | "ringbroker-remote" | "nats" | "rabbitmq",
#    "workload": "pubsub-64B" | "request-reply-64B" | "publish-batch-64B",
#    "msgs_per_s": float, "p50_us": float|null, "p99_us": float|null,
#    "sent": int, "received": int}
# Anything else goes to stderr.

set -euo pipefail

ROUNDS=3
SECONDS_PER_RUN=5
OUT=""
ONLY="python,node,go"
SKIP=""
PIN=false
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --skip) SKIP="$2"; shift 2 ;;
        --pin-to-cores) PIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$REPO/target/bindings-bench-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT/raw" "$OUT/data"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

LOG_TAG=bindings-bench
# shellcheck source=../lib/servers.sh
. "$REPO/benches/lib/servers.sh"
skipped() { case ",$SKIP," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

IFS=, read -r -a LANGS <<< "$ONLY"
for lang in "${LANGS[@]}"; do
    [ -x "$REPO/benches/bindings/$lang/run" ] || { echo "no benches/bindings/$lang/run" >&2; exit 2; }
done

# nats-server is shared with the other scripts' cache in target/peers/bin.
PEERS_BIN="$REPO/target/peers/bin"
mkdir -p "$PEERS_BIN"
if ! skipped nats && [ ! -x "$PEERS_BIN/nats-server" ]; then
    GOBIN="$PEERS_BIN" go install github.com/nats-io/nats-server/v2@latest
fi
NATS_SERVER="$PEERS_BIN/nats-server"
if ! skipped rabbitmq && ! command -v rabbitmq-server >/dev/null; then
    apt_install_quietly rabbitmq-server
fi
(cd "$REPO" && cargo build --release -q -p ringbrokerd)
RB="$REPO/target/release/ringbrokerd"
RB_PIN_TO_CORES="$PIN"
export BENCH_PIN_TO_CORES="$PIN"

start_ringbroker
NATS_URL=""; skipped nats || start_nats
RABBIT_URI=""; skipped rabbitmq || start_rabbitmq

# Each language's run script prepares itself (venv, npm install, go build) on its first
# call; a warm-up call with a short cap keeps that out of round 1.
for lang in "${LANGS[@]}"; do
    log "preparing $lang"
    RINGBROKER_URL="$RB_URL" NATS_URL="$NATS_URL" AMQP_URL="$RABBIT_URI" BENCH_SECONDS=1 \
        "$REPO/benches/bindings/$lang/run" > "$OUT/raw/warmup-$lang.jsonl" 2> "$OUT/raw/warmup-$lang.err" \
        || { log "$lang warm-up failed: $OUT/raw/warmup-$lang.err"; exit 1; }
done

for r in $(seq 1 "$ROUNDS"); do
    order=("${LANGS[@]}")
    if [ $(( r % 2 )) -eq 0 ]; then
        order=(); for (( i=${#LANGS[@]}-1; i>=0; i-- )); do order+=("${LANGS[$i]}"); done
    fi
    for lang in "${order[@]}"; do
        log "round $r of $ROUNDS: $lang"
        raw="$OUT/raw/r$r-$lang"
        if RINGBROKER_URL="$RB_URL" NATS_URL="$NATS_URL" AMQP_URL="$RABBIT_URI" BENCH_SECONDS="$SECONDS_PER_RUN" \
            "$REPO/benches/bindings/$lang/run" > "$raw.jsonl" 2> "$raw.err"; then
            python3 -c '
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        row = json.loads(line); row["round"] = int(sys.argv[2]); row["lang"] = sys.argv[3]
        print(json.dumps(row))
' "$raw.jsonl" "$r" "$lang" >> "$RESULTS"
        else
            log "$lang failed in round $r: $raw.err"
        fi
    done
done

python3 "$REPO/benches/bindings/table.py" "$RESULTS" "$(nproc)" > "$OUT/bindings.md"
cat "$OUT/bindings.md"
log "table: $OUT/bindings.md; raw outputs: $OUT/raw/"
