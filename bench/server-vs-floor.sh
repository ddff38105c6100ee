#!/usr/bin/env bash
# The reference server's request/response throughput against the echo floor
# (bench/src/floor.rs), both on 127.0.0.1, driven by the same load
# (`sessionwire load --mode throughput`). Prints one table: messages/s,
# p50/p99 round trip and the ratio serve/floor, each the median of RUNS runs.
#
# Environment (defaults in brackets):
#   RUNS [3]          repetitions; every row is the median of these
#   DURATION [10]     seconds of requests per run
#   WINDOW_ONE [16]   requests in flight for the 1-session rows
#   WINDOW_MANY [8]   requests in flight per session for the 1,000-session rows
#   MANY [1000]       sessions of the many-session rows
#   NICE [-5]         niceness of servers and load generator (ignored if not allowed)
#   OUT [a temporary directory]  where the JSON reports and server logs go
#
# Every run is bounded (timeout), and both servers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WINDOW_ONE=${WINDOW_ONE:-16}
WINDOW_MANY=${WINDOW_MANY:-8}
MANY=${MANY:-1000}
NICE=${NICE:--5}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

cargo build --release -q -p sessionwire-cli -p sessionwire-bench --bin sessionwire --bin echo-floor
B=target/release/sessionwire
F=target/release/echo-floor
nice -n "$NICE" true 2>/dev/null || NICE=0

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

# start_server NAME: starts it, sets SERVER_PID and ADDR.
start_server() {
    local log="$OUT/$1.out"
    case $1 in
        serve) nice -n "$NICE" "$B" serve --listen 127.0.0.1:0 --control 127.0.0.1:0 \
                   --ping-period 0 --max-clients 20000 >"$log" 2>"$OUT/$1.err" & ;;
        floor) nice -n "$NICE" "$F" 127.0.0.1:0 >"$log" 2>"$OUT/$1.err" & ;;
    esac
    SERVER_PID=$!
    ADDR=
    for _ in $(seq 100); do
        ADDR=$(grep -o '127\.0\.0\.1:[0-9]*' "$log" | head -n1 || true)
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "error: $1 did not say where it listens" >&2
    exit 2
}

# load NAME TRANSPORT SESSIONS WINDOW RUN: one run, its JSON report saved.
load() {
    local file="$OUT/$1-$2-$3-$5.json"
    timeout $((DURATION + 150)) nice -n "$NICE" "$B" load --mode throughput --json \
        --addr "$ADDR" --transport "$2" --sessions "$3" --window "$4" \
        --duration "$DURATION" --ramp-timeout 60 >"$file" || true
    jq -c '{messages_per_s, lost, p50: .latency_us.p50, p99: .latency_us.p99, sessions}' "$file" >&2
}

for run in $(seq "$RUNS"); do
    for server in serve floor; do
        start_server "$server"
        echo "run $run: $server on $ADDR" >&2
        load "$server" ws 1 "$WINDOW_ONE" "$run"
        load "$server" ws "$MANY" "$WINDOW_MANY" "$run"
        if [ "$server" = serve ]; then
            load serve http 1 "$WINDOW_ONE" "$run"
        fi
        stop_server
    done
done

python3 - "$OUT" "$RUNS" "$MANY" "$WINDOW_ONE" "$WINDOW_MANY" <<'PY'
import json, statistics, sys
out, runs, many, w1, wn = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def median(server, transport, sessions, key):
    values = []
    for run in range(1, runs + 1):
        try:
            with open(f"{out}/{server}-{transport}-{sessions}-{run}.json") as f:
                r = json.load(f)
        except (OSError, ValueError):
            continue
        if r["lost"] or r["sessions"]["connected"] != r["sessions"]["requested"]:
            print(f"warning: {server} {transport} {sessions} run {run} was not clean", file=sys.stderr)
        values.append({"mps": r["messages_per_s"], "p50": r["latency_us"]["p50"],
                       "p99": r["latency_us"]["p99"]}[key])
    return statistics.median(values) if values else None

def ms(us):
    return "-" if us is None else f"{us / 1000:.2f} ms"

def k(v):
    return "-" if v is None else f"{v:,.0f}"

print(f"| transport | sessions | window | serve msgs/s | floor msgs/s | serve/floor | serve p50 / p99 | floor p50 / p99 |")
print("|---|---|---|---|---|---|---|---|")
for transport, sessions, window in [("ws", "1", w1), ("ws", many, wn), ("http", "1", w1)]:
    s, f = median("serve", transport, sessions, "mps"), median("floor", transport, sessions, "mps")
    ratio = f"{s / f:.2f}" if s and f else "-"
    print(f"| {transport} | {int(sessions):,} | {window} | {k(s)} | {k(f)} | {ratio} | "
          f"{ms(median('serve', transport, sessions, 'p50'))} / {ms(median('serve', transport, sessions, 'p99'))} | "
          f"{ms(median('floor', transport, sessions, 'p50'))} / {ms(median('floor', transport, sessions, 'p99'))} |")
print(f"\n(medians of {runs} runs; JSON reports in {out})")
PY
