#!/usr/bin/env bash
# Our MQTT broker (`sessionwire serve --mqtt-listen`) side by side with
# Debian's mosquitto, both on 127.0.0.1, driven by the same load
# (`sessionwire load --mode mqtt`) in one run: fan-in (N publishers -> 1
# subscriber) and fan-out (1 publisher -> N subscribers), QoS 0 and 1, for
# each N in CONNS. Each broker is started afresh for every row, so that its
# memory before the ramp is a clean baseline. Prints one Markdown table:
# delivered messages/s, p50/p99 latency, messages lost and the broker's
# memory per idle connection, with the ratios ours/mosquitto. Memory is
# given twice: the growth of VmRSS (everything resident), and of RssAnon,
# its anonymous part (heap, stacks), which leaves out the executable's code
# that a broker's first clients page in once.
#
# Environment (defaults in brackets):
#   CONNS ["1000 10000"]   N of each row
#   PATTERNS ["fan-in fan-out"]
#   QOS ["0 1"]
#   VERSION [5]            MQTT version of every client (5 or 311)
#   DURATION [5]           seconds of publishing per row
#   WINDOW_IN [64]         messages on their way at once, fan-in
#   WINDOW_OUT [8]         messages on their way at once, fan-out (each goes to N)
#   PAYLOAD [64]           payload bytes
#   BROKERS ["sessionwire mosquitto"]
#   NICE [0]               niceness of brokers and load generator
#   OUT [a temporary directory]  where the JSON reports and broker logs go
#
# Every load run is bounded (timeout), and the broker is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-"1000 10000"}
PATTERNS=${PATTERNS:-"fan-in fan-out"}
QOS=${QOS:-"0 1"}
VERSION=${VERSION:-5}
DURATION=${DURATION:-5}
WINDOW_IN=${WINDOW_IN:-64}
WINDOW_OUT=${WINDOW_OUT:-8}
PAYLOAD=${PAYLOAD:-64}
BROKERS=${BROKERS:-"sessionwire mosquitto"}
NICE=${NICE:-0}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

for tool in jq python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 2; }
done
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "error: mosquitto is not installed (apt-get install mosquitto)" >&2; exit 2; }

# 10,000 connections need as many descriptors on each side (the brokers
# inherit the limit; the load generator raises its own as far as allowed).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for n in $CONNS; do
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((n + 100)) ] ||
        echo "warning: ulimit -n is $(ulimit -n): rows of $n connections will fail" >&2
done

cargo build --release -q -p sessionwire-cli --bin sessionwire
B=target/release/sessionwire

BROKER_PID=
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
trap stop_broker EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker NAME TAG: starts it, sets BROKER_PID and ADDR (its MQTT address).
start_broker() {
    local log="$OUT/$2.out"
    case $1 in
        sessionwire)
            nice -n "$NICE" "$B" serve --listen 127.0.0.1:0 \
                --mqtt-listen 127.0.0.1:0 --ping-period 0 --max-clients 20000 \
                >"$log" 2>"$OUT/$2.err" &
            BROKER_PID=$!
            ADDR=
            for _ in $(seq 100); do
                ADDR=$(grep -o 'mqtt on 127\.0\.0\.1:[0-9]*' "$log" | cut -d' ' -f3 || true)
                [ -n "$ADDR" ] && return 0
                sleep 0.1
            done
            ;;
        mosquitto)
            local port
            port=$(free_port)
            # Unbounded queues and in-flight windows: it must lose nothing at
            # QoS 1, and the load's window bounds what is on its way.
            cat >"$OUT/$2.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 0
max_inflight_messages 0
log_dest stderr
log_type error
EOF
            nice -n "$NICE" "$MOSQUITTO" -c "$OUT/$2.conf" >"$log" 2>"$OUT/$2.err" &
            BROKER_PID=$!
            ADDR=127.0.0.1:$port
            for _ in $(seq 100); do
                python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" \
                    2>/dev/null && return 0
                sleep 0.1
            done
            ;;
    esac
    echo "error: $1 did not listen (see $OUT/$2.err)" >&2
    exit 2
}

# row PATTERN QOS N BROKER: one load run against a fresh broker.
row() {
    local tag="$4-$1-q$2-$3" window=$WINDOW_IN
    [ "$1" = fan-out ] && window=$WINDOW_OUT
    start_broker "$4" "$tag"
    timeout $((DURATION + 200)) nice -n "$NICE" "$B" load --mode mqtt --json \
        --addr "$ADDR" --mqtt-version "$VERSION" --mqtt-pattern "$1" --qos "$2" \
        --sessions "$3" --window "$window" --payload "$PAYLOAD" --duration "$DURATION" \
        --settle 2 --ramp-timeout 120 --connect-concurrency 128 --server-pid "$BROKER_PID" \
        >"$OUT/$tag.json" || true
    stop_broker
    [ -s "$OUT/$tag.json" ] || echo '{}' >"$OUT/$tag.json"
    jq -c --arg t "$tag" '{row: $t, messages_per_s, lost, connected, dropped,
        p50: .latency_us.p50, p99: .latency_us.p99, idle: .idle_bytes_per_connection,
        anon: .idle_anon_bytes_per_connection}' \
        "$OUT/$tag.json" >&2
}

for n in $CONNS; do
    for pattern in $PATTERNS; do
        for q in $QOS; do
            for broker in $BROKERS; do
                row "$pattern" "$q" "$n" "$broker"
            done
        done
    done
done

# The table: one line per row, ours against mosquitto.
echo
echo "MQTT $VERSION, ${DURATION} s per row, payload $PAYLOAD B, window $WINDOW_IN (fan-in) / $WINDOW_OUT (fan-out); results in $OUT"
echo
echo "| pattern | QoS | N | msgs/s sessionwire | msgs/s mosquitto | ratio | p50 / p99 ms sessionwire | p50 / p99 ms mosquitto | lost s / m | B per idle conn s / m | ratio | anon B per idle conn s / m | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in $CONNS; do
    for pattern in $PATTERNS; do
        for q in $QOS; do
            s="$OUT/sessionwire-$pattern-q$q-$n.json"
            m="$OUT/mosquitto-$pattern-q$q-$n.json"
            [ -f "$s" ] || echo '{}' >"$s"
            [ -f "$m" ] || echo '{}' >"$m"
            jq -r -n --slurpfile s "$s" --slurpfile m "$m" \
                --arg p "$pattern" --arg q "$q" --arg n "$n" '
                def num: if . == null then "-" else (. * 10 | round / 10 | tostring) end;
                def ms: if . == null then "-" else (. / 100 | round / 10 | tostring) end;
                def ratio(a; b): if a == null or b == null or b == 0 then "-"
                                 else (a / b * 100 | round / 100 | tostring) end;
                $s[0] as $s | $m[0] as $m |
                "| \($p) | \($q) | \($n) | \($s.messages_per_s | num) | \($m.messages_per_s | num) | \(ratio($s.messages_per_s; $m.messages_per_s)) | \($s.latency_us.p50 | ms) / \($s.latency_us.p99 | ms) | \($m.latency_us.p50 | ms) / \($m.latency_us.p99 | ms) | \($s.lost // "-") / \($m.lost // "-") | \($s.idle_bytes_per_connection // "-") / \($m.idle_bytes_per_connection // "-") | \(ratio($s.idle_bytes_per_connection; $m.idle_bytes_per_connection)) | \($s.idle_anon_bytes_per_connection // "-") / \($m.idle_anon_bytes_per_connection // "-") | \(ratio($s.idle_anon_bytes_per_connection; $m.idle_anon_bytes_per_connection)) |"'
        done
    done
done
