#!/usr/bin/env bash
# Three gateways and one Redis on loopback: watch one rate limit hold across all three.
#
#   examples/three-gateways.sh          start them, send 30 requests round the three, keep running
#   Ctrl-C                              stop everything this script started
#
# Needs redis-server (apt-get install redis-server) and twistgate installed (pip install -e .),
# so that `twistd twistgate` works. Ports: Redis 6390, the upstream 4100, the gateways 3100-3102
# and their status listeners 3200-3202 (REDIS_PORT, UPSTREAM_PORT, GATEWAY_PORT and STATUS_PORT
# change the first of each). Everything listens on 127.0.0.1 only, and the files go to a
# temporary directory that is removed at the end.
set -euo pipefail

REDIS_PORT="${REDIS_PORT:-6390}"
UPSTREAM_PORT="${UPSTREAM_PORT:-4100}"
GATEWAY_PORT="${GATEWAY_PORT:-3100}"
STATUS_PORT="${STATUS_PORT:-3200}"
PYTHON="${PYTHON:-python3}"
TWISTD="${TWISTD:-twistd}"
RATE="${RATE:-10/1m}"

work="$(mktemp -d)"
pids=()

stop() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
trap 'exit 0' INT TERM

wait_for() {  # wait_for PORT NAME
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$2 did not start on port $1; its log is in $work" >&2
    exit 1
}

echo "Redis on 127.0.0.1:$REDIS_PORT (nothing saved)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$REDIS_PORT" redis-server

echo "an upstream (python -m http.server) on 127.0.0.1:$UPSTREAM_PORT"
mkdir "$work/www" && echo "hello from the upstream" >"$work/www/index.html"
"$PYTHON" -m http.server "$UPSTREAM_PORT" --bind 127.0.0.1 --directory "$work/www" \
    >"$work/upstream.log" 2>&1 &
pids+=($!)
wait_for "$UPSTREAM_PORT" upstream

for n in 0 1 2; do
    port=$((GATEWAY_PORT + n))
    cat >"$work/gw$n.ini" <<EOF
[gateway]
listen = tcp:$port:interface=127.0.0.1
access_log = off
[status]
listen = tcp:$((STATUS_PORT + n)):interface=127.0.0.1
[store]
backend = redis
url = redis://127.0.0.1:$REDIS_PORT/0
store_timeout = 50ms
nodes = 3
[filter:limit]
use = ratelimit
rate = $RATE
[route:all]
prefix = /
upstream = http://127.0.0.1:$UPSTREAM_PORT
filters = limit
EOF
    echo "gateway $n on 127.0.0.1:$port (status: http://127.0.0.1:$((STATUS_PORT + n))/status)"
    "$TWISTD" -n --pidfile= --logfile="$work/gw$n.log" twistgate --config "$work/gw$n.ini" &
    pids+=($!)
done
for n in 0 1 2; do
    wait_for $((GATEWAY_PORT + n)) "gateway $n"
done

echo
echo "30 requests, one after another, to gateway 0, 1, 2, 0, 1, 2, ... at rate = $RATE per client:"
for i in $(seq 0 29); do
    port=$((GATEWAY_PORT + i % 3))
    printf '%s ' "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")"
done
echo
echo "(with [store] backend = memory, each gateway would let its own ${RATE%%/*} through)"
echo
echo "Try it yourself:"
echo "  curl -i http://127.0.0.1:$((GATEWAY_PORT + 1))/       # RateLimit-* headers agree on every gateway"
echo "  redis-cli -p $REDIS_PORT keys 'twistgate:rl:*'       # one key per client, expiring"
echo "  redis-cli -p $REDIS_PORT shutdown nosave             # Redis down: limit/3 per gateway"
echo "Ctrl-C stops everything."
wait
