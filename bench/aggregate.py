"""
An aggregate's cost: one request answered by two parts, against the two plain requests a client
would make instead, through the same gateway in one run.

    python -m bench.aggregate                 CPython
    python -m bench.aggregate --pypy --rounds 6

One twistgate process serves both, in front of the nginx upstream of ``python -m bench``: the
plain scenario's route (``GET /users``, proxied) and an aggregate (``GET /both``) whose two parts
are ``GET /users?part=a`` and ``GET /users?part=b`` on the same upstream. Rounds alternate between
the two paths; each prints its requests per second and the CPU the gateway spent per request.
The run ends with the ratio that says what aggregation costs: aggregate answers per second
against half the plain requests per second (two plain requests fetch what one aggregate does),
so 1.0 means merging two answers costs the gateway what proxying them would, and more than 1.0
that one aggregate is cheaper than the two requests it replaces. Needs what ``python -m bench``
needs (nginx, wrk).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys

from bench import processes, scenarios, wrk
from bench.processes import WORK

#: The aggregate's path.
AGGREGATE_PATH = "/both"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.aggregate",
                                     description=__doc__.split("\n")[1])
    parser.add_argument("--pypy", action="store_true", help="twistgate on PyPy (default CPython)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per path (default 4)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per path (default 3, PyPy 30)")
    return parser.parse_args(argv)


def config(port: int, upstream_port: int) -> str:
    """The plain scenario's gw.ini and an aggregate of two parts on the same upstream."""
    plain = scenarios.twistgate_config(scenarios.SCENARIOS["plain"], port, upstream_port)
    aggregate = (
        "[aggregate:both]\n"
        f"path = {AGGREGATE_PATH}\n"
        f"fetch.a = users {scenarios.PATH}?part=a\n"
        f"fetch.b = users {scenarios.PATH}?part=b\n"
        "required = a b\n"
    )
    return plain + "\n" + aggregate


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    processes.need("nginx", "nginx-light")
    processes.need("wrk", "wrk")
    python = shutil.which("pypy3") if args.pypy else sys.executable
    venv = processes.prepare_twistgate_venv("venv-pypy" if args.pypy else "venv-cpython", python)
    warmup = args.warmup if args.warmup is not None else (30.0 if args.pypy else 3.0)
    anchors = processes.find_anchors(None)
    run_dir = WORK / "runs" / "aggregate"
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"plain": scenarios.PATH, "aggregate": AGGREGATE_PATH}
    with processes.Processes() as running:
        upstream = processes.nginx_upstream(anchors, processes.free_port(), run_dir)
        running.start(upstream, scenarios.PATH)
        port = processes.free_port()
        path = run_dir / "gw.ini"
        path.write_text(config(port, upstream.port))
        server = processes.twistgate("aggregate", venv, path, port, run_dir)
        running.start(server, AGGREGATE_PATH)
        answer = processes.http_get(server.url + AGGREGATE_PATH)
        if answer.count(scenarios.UPSTREAM_MARK) != 2:
            raise processes.StartError("the aggregate did not merge two upstream answers: %r"
                                       % answer[:200])
        for label in paths.values():
            wrk.run(server.url + label, warmup, args.connections)
        rps: dict[str, list[float]] = {label: [] for label in paths}
        for round_ in range(args.rounds):
            order = list(paths.items()) if round_ % 2 == 0 else list(paths.items())[::-1]
            for label, url_path in order:
                cpu = processes.cpu_seconds(server.pid)
                result = wrk.run(server.url + url_path, args.duration, args.connections)
                used = processes.cpu_seconds(server.pid) - cpu
                if result.non_2xx or sum(result.errors.values()):
                    print("round %d  %s: %d non-2xx answers, errors %s"
                          % (round_ + 1, label, result.non_2xx, result.errors), flush=True)
                rps[label].append(result.requests_per_sec)
                print("round %d  %-9s %8.0f req/s  %7.1f us CPU per request  p50 %s ms"
                      % (round_ + 1, label, result.requests_per_sec,
                         used / max(result.requests, 1) * 1e6, result.p50_ms), flush=True)
    paired = statistics.median(a / (p / 2) for p, a in zip(rps["plain"], rps["aggregate"]))
    print("aggregate of two parts on %s: plain %.0f req/s, aggregate %.0f answers/s (medians); "
          "aggregate / (plain / 2) = %.2fx (median of the rounds' ratios)"
          % ("PyPy" if args.pypy else "CPython", statistics.median(rps["plain"]),
             statistics.median(rps["aggregate"]), paired))
    return 0


if __name__ == "__main__":
    sys.exit(main())
