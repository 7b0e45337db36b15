# Shared by the peer-comparison scripts (benches/compare/run.sh,
# benches/bindings/run.sh): start ringbrokerd and the peer brokers on 127.0.0.1 on free
# ports, record every process id in PIDS, and stop each one by its pid when the script
# exits, however it exits. Sourced, not run.
#
# The caller sets, before starting anything:
#   OUT      output directory: servers keep data under $OUT/data, logs under $OUT/raw
#   RB       path of the ringbrokerd binary (for start_ringbroker)
#   JARS     directory of the Kafka jars (for start_kafka)
#   LOG_TAG  prefix of this script's log lines (default "bench")
#   RB_PIN_TO_CORES  ringbrokerd's --pin-to-cores (default true)
# and may set NATS_SERVER (default $OUT/bin/nats-server).

PIDS=()
servers_cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap servers_cleanup EXIT INT TERM

log() { echo "${LOG_TAG:-bench}: $*" >&2; }
wait_port() {   # host port seconds
    local i
    for i in $(seq 1 $(( $3 * 10 ))); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on $1:$2 after $3 s"; return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Debian packages whose own services must not start (the scripts start their own).
apt_install_quietly() {
    [ $# -gt 0 ] || return 0
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.bench && chmod +x /usr/sbin/policy-rc.d.bench
    [ -e /usr/sbin/policy-rc.d ] || cp /usr/sbin/policy-rc.d.bench /usr/sbin/policy-rc.d
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
    cmp -s /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.bench && rm -f /usr/sbin/policy-rc.d
    rm -f /usr/sbin/policy-rc.d.bench
}

start_ringbroker() {
    RB_PORT=$(free_port)
    "$RB" --data-dir "$OUT/data/ringbroker" --listen "127.0.0.1:$RB_PORT" --admin off \
        --pin-to-cores "${RB_PIN_TO_CORES:-true}" \
        > "$OUT/raw/ringbrokerd.log" 2>&1 &
    PIDS+=($!)
    wait_port 127.0.0.1 "$RB_PORT" 30
    RB_URL="ringbroker://127.0.0.1:$RB_PORT"
}

start_nats() {
    NATS_PORT=$(free_port)
    "${NATS_SERVER:-$OUT/bin/nats-server}" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/data/nats" \
        > "$OUT/raw/nats-server.log" 2>&1 &
    PIDS+=($!)
    wait_port 127.0.0.1 "$NATS_PORT" 30
    NATS_URL="nats://127.0.0.1:$NATS_PORT"
}

start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$OUT/data" > "$OUT/raw/redis-server.log" 2>&1 &
    PIDS+=($!)
    wait_port 127.0.0.1 "$REDIS_PORT" 30
}

# RabbitMQ's Erlang schedulers busy-wait when idle by default; on a machine whose few
# cores the other servers and the clients share, that spinning takes CPU from whatever
# is being measured, so it is off (RabbitMQ's advice for shared hosts) unless
# RABBITMQ_ERL_ARGS says otherwise (set it empty for Erlang's defaults).
start_rabbitmq() {
    RABBIT_PORT=$(free_port)
    local epmd_port; epmd_port=$(free_port)
    export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$epmd_port"
    epmd -address 127.0.0.1 -port "$epmd_port" > "$OUT/raw/epmd.log" 2>&1 &
    PIDS+=($!)
    mkdir -p "$OUT/data/rabbitmq"
    # Debian's rabbitmq-server drops to the rabbitmq user when started as root.
    if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq: "$OUT/data/rabbitmq"; fi
    RABBITMQ_NODENAME="bench$$@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$RABBIT_PORT" RABBITMQ_DIST_PORT="$(free_port)" \
        RABBITMQ_MNESIA_BASE="$OUT/data/rabbitmq" RABBITMQ_LOG_BASE="$OUT/data/rabbitmq" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$OUT/data/rabbitmq/plugins" \
        RABBITMQ_PID_FILE="$OUT/data/rabbitmq/node.pid" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_ERL_ARGS-+sbwt none +sbwtdcpu none +sbwtdio none}" \
        rabbitmq-server > "$OUT/raw/rabbitmq-server.log" 2>&1 &
    PIDS+=($!)
    wait_port 127.0.0.1 "$RABBIT_PORT" 120
    # The wrapper switches user and its SIGTERM does not reach the Erlang node: stop
    # the node itself, by the pid it wrote, first.
    local node; node=$(cat "$OUT/data/rabbitmq/node.pid" 2>/dev/null || true)
    if [ -n "$node" ]; then PIDS=("$node" "${PIDS[@]}"); else log "RabbitMQ wrote no pid file"; fi
    RABBIT_URI="amqp://guest:guest@127.0.0.1:$RABBIT_PORT"
}

start_kafka() {
    KAFKA_PORT=$(free_port)
    local ctl; ctl=$(free_port)
    local dir="$OUT/data/kafka"; mkdir -p "$dir"
    cat > "$dir/server.properties" <<KAFKA
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
num.partitions=1
KAFKA
    java -cp "$JARS/*" kafka.tools.StorageTool format -t "$(java -cp "$JARS/*" kafka.tools.StorageTool random-uuid)" \
        -c "$dir/server.properties" > "$OUT/raw/kafka-format.log" 2>&1
    java -Xmx1g -cp "$JARS/*" kafka.Kafka "$dir/server.properties" > "$OUT/raw/kafka.log" 2>&1 &
    PIDS+=($!)
    wait_port 127.0.0.1 "$KAFKA_PORT" 120
}
