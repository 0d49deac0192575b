"""
The rate-limit store's cost: the jwt scenario's ratelimit on the memory store and on Redis, side
by side, in one run.

    python -m bench.store                 CPython
    python -m bench.store --pypy --rounds 6

Two twistgate processes run the same gw.ini (a rate limit far above what the machine reaches, in
front of the plain proxy) but for ``[store]``: one counts in its own memory, the other asks a
``redis-server`` started for the run (127.0.0.1, a free port, no persistence) once per request.
Rounds alternate between them; each prints its requests per second, the CPU it spent per
request, redis-server's CPU per request, and the share of its requests that Redis decided (the
rest passed because the store was down: a round below 100% flatters the store); the run ends
with the Redis store's throughput as a share of the memory store's.
Needs what ``python -m bench`` needs, and redis-server (``apt-get install -y redis-server``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import time

from bench import processes, scenarios, wrk
from bench.processes import WORK, Server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store",
                                     description=__doc__.split("\n")[1])
    parser.add_argument("--pypy", action="store_true", help="twistgate on PyPy (default CPython)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per store (default 4)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per gateway (default 3, PyPy 30)")
    return parser.parse_args(argv)


def config(port: int, upstream_port: int, store: str) -> str:
    """The plain scenario's gw.ini with a rate limit in front, on C{store}'s [store] section."""
    plain = scenarios.twistgate_config(scenarios.SCENARIOS["plain"], port, upstream_port)
    plain = plain.replace("access_log = off", "access_log = off\nfilters = limit")
    limit = "[filter:limit]\nuse = ratelimit\nrate = 100000000/1s\nkey = ip\n"
    return plain + "\n" + limit + "\n" + store


def redis_server(port: int, run_dir) -> Server:
    """A throw-away redis-server on 127.0.0.1:C{port}: no persistence, its files in C{run_dir}."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise processes.SetupError(
            "redis-server is not installed (apt-get install -y redis-server)"
        )
    directory = run_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    return Server(
        name="redis",
        argv=[binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
              "no", "--dir", str(directory)],
        port=port,
        log=directory / "redis.log",
        cwd=directory,
    )


def wait_for_redis(server: Server, timeout: float = 10.0) -> None:
    """Until redis answers PING on its port (it speaks no HTTP, so the usual wait does not do)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.1)
    raise processes.StartError("redis-server did not answer PING:\n" + server.log_tail())


def redis_script_calls(server: Server) -> int:
    """How many times redis-server has run the script so far (EVALSHA and EVAL, INFO's count)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data or len(data) < _bulk_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    calls = 0
    for line in data.decode("latin-1").splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            calls += int(line.split("calls=", 1)[1].split(",", 1)[0])
    return calls


def _bulk_length(data: bytes) -> int:
    """The length of a RESP bulk reply (C{$N}, CRLF, N bytes, CRLF) that starts C{data}."""
    head = data.partition(b"\r\n")[0]
    return len(head) + 2 + int(head[1:]) + 2


def outages(server: Server) -> int:
    """The times the gateway's log says the store went down so far."""
    try:
        text = server.log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines()
               if "rate-limit store" in line and " is down (" in line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    processes.need("nginx", "nginx-light")
    processes.need("wrk", "wrk")
    python = shutil.which("pypy3") if args.pypy else sys.executable
    venv = processes.prepare_twistgate_venv("venv-pypy" if args.pypy else "venv-cpython", python)
    warmup = args.warmup if args.warmup is not None else (30.0 if args.pypy else 3.0)
    anchors = processes.find_anchors(None)
    run_dir = WORK / "runs" / "store"
    run_dir.mkdir(parents=True, exist_ok=True)
    with processes.Processes() as running:
        upstream = processes.nginx_upstream(anchors, processes.free_port(), run_dir)
        running.start(upstream, scenarios.PATH)
        redis = redis_server(processes.free_port(), run_dir)
        redis.start()
        running.servers.append(redis)
        wait_for_redis(redis)
        stores = {
            "memory": "[store]\nbackend = memory\n",
            "redis": "[store]\nbackend = redis\nurl = redis://127.0.0.1:%d/0\n" % redis.port,
        }
        gateways = []
        for label, store in stores.items():
            port = processes.free_port()
            path = run_dir / ("gw-%s.ini" % label)
            path.write_text(config(port, upstream.port, store))
            server = processes.twistgate("store-" + label, venv, path, port, run_dir)
            running.start(server, scenarios.PATH)
            gateways.append((label, server))
        for _, server in gateways:
            wrk.run(server.url + scenarios.PATH, warmup, args.connections)
        rps: dict[str, list[float]] = {label: [] for label, _ in gateways}
        decided: list[float] = []
        for round_ in range(args.rounds):
            order = gateways if round_ % 2 == 0 else gateways[::-1]
            for label, server in order:
                cpu = processes.cpu_seconds(server.pid)
                redis_cpu = processes.cpu_seconds(redis.pid)
                calls, down = redis_script_calls(redis), outages(server)
                result = wrk.run(server.url + scenarios.PATH, args.duration, args.connections)
                used = processes.cpu_seconds(server.pid) - cpu
                redis_used = processes.cpu_seconds(redis.pid) - redis_cpu
                calls, down = redis_script_calls(redis) - calls, outages(server) - down
                if result.non_2xx or sum(result.errors.values()):
                    print("round %d  %s: %d non-2xx answers, errors %s"
                          % (round_ + 1, label, result.non_2xx, result.errors), flush=True)
                rps[label].append(result.requests_per_sec)
                requests = max(result.requests, 1)
                if label == "redis":
                    decided.append(calls / requests)
                # A request that Redis did not decide (the store was down: it passed unlimited)
                # costs nothing there: the share that Redis decided tells whether the round
                # measured the Redis store at all.
                print("round %d  %-6s %8.0f req/s  %6.1f us CPU per request, redis-server"
                      " %5.1f us, decided by Redis %3.0f%%%s"
                      % (round_ + 1, label, result.requests_per_sec, used / requests * 1e6,
                         redis_used / requests * 1e6, 100.0 * calls / requests,
                         ", store went down %d times" % down if down else ""), flush=True)
    paired = statistics.median(r / m for m, r in zip(rps["memory"], rps["redis"]))
    print("ratelimit on %s: memory %.0f req/s, redis %.0f req/s (medians); redis / memory = "
          "%.2fx (median of the rounds' ratios)"
          % ("PyPy" if args.pypy else "CPython", statistics.median(rps["memory"]),
             statistics.median(rps["redis"]), paired))
    print("Redis decided %.0f%% of the redis gateway's requests (median of the rounds)%s"
          % (100 * statistics.median(decided),
             "" if min(decided) > 0.99 else ": the rest passed while the store was down, so the "
             "redis figure flatters the store"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
