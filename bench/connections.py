"""
Many clients at once: throughput, p99, upstream connects per request and memory at 50, 500 and
2,000 concurrent connections, for twistgate beside fastify and nginx, in one run.

    python -m bench.connections                     CPython and PyPy, fastify, nginx
    python -m bench.connections --no-cpython --clients 50 2000 --duration 5

Every gateway proxies to one nginx upstream whose ``stub_status`` counts the connections it
accepted, so each run also says how many new upstream connections a request cost: a gateway
that keeps its upstream connections alive costs none in steady state. For each client count,
each gateway is warmed up at that count and then measured once; the RSS is read at the end of
the run, so its growth between counts is what the extra connections cost. Needs what
``python -m bench`` needs (its first run prepares bench/.work).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import urllib.request
from pathlib import Path

from bench import processes, scenarios, wrk
from bench.processes import WORK, Server, say

#: The upstream's own counter of accepted connections, added to the anchor's config.
STATUS_PATH = "/nginx_status"

_ACCEPTS = re.compile(r"^\s*([0-9]+)\s+[0-9]+\s+[0-9]+\s*$", re.MULTILINE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.connections",
                                     description=__doc__.split("\n")[1])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 500, 2000],
                        help="concurrent connections, one measurement each (default 50 500 2000)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (CPython)")
    parser.add_argument("--pypy-warmup", type=float, default=20.0, help="warm-up seconds (PyPy)")
    parser.add_argument("--cpython", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--pypy", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--references", action=argparse.BooleanOptionalAction, default=True,
                        help="fastify and nginx beside twistgate (default yes)")
    return parser.parse_args(argv)


def counting_upstream(anchors: Path, port: int, run_dir: Path) -> Server:
    """The anchor's nginx upstream, with a C{stub_status} location that counts its connections."""
    server = processes.nginx(
        "upstream", anchors, "upstream.conf", port,
        {"18081": str(port),
         "location / {": "location = %s { stub_status; }\n    location / {" % STATUS_PATH},
        run_dir,
    )
    return server


def accepted(upstream: Server) -> int:
    """How many connections the upstream has accepted so far."""
    with urllib.request.urlopen(upstream.url + STATUS_PATH, timeout=5) as answer:
        text = answer.read().decode()
    found = _ACCEPTS.search(text)
    if found is None:
        raise processes.SetupError("not nginx's stub_status: %r" % text)
    return int(found.group(1))


def gateways(
    args: argparse.Namespace, anchors: Path, upstream: Server, run_dir: Path
) -> list[tuple[str, Server, float]]:
    """(label, server, warm-up) of every gateway of the run, not started yet."""
    found = []
    plain = scenarios.SCENARIOS["plain"]
    interpreters = []
    if args.cpython:
        interpreters.append(("CPython", sys.executable, "venv-cpython", args.warmup))
    if args.pypy and shutil.which("pypy3"):
        interpreters.append(("PyPy", shutil.which("pypy3"), "venv-pypy", args.pypy_warmup))
    for label, python, name, warmup in interpreters:
        venv = processes.prepare_twistgate_venv(name, python)
        port = processes.free_port()
        config = run_dir / ("gw-%s.ini" % name)
        config.write_text(scenarios.twistgate_config(plain, port, upstream.port))
        server = processes.twistgate("twistgate-" + name, venv, config, port, run_dir)
        found.append(("twistgate (%s)" % label, server, warmup))
    if args.references:
        anchor = processes.prepare_anchor(anchors, "fastify-gateway")
        fastify = processes.node_gateway("fastify", anchor, processes.free_port(), upstream.url,
                                         run_dir)
        found.append(("fastify", fastify, args.warmup))
        nginx = processes.nginx_proxy(anchors, processes.free_port(), upstream.port, run_dir)
        found.append(("nginx proxy", nginx, args.warmup))
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    processes.need("nginx", "nginx-light")
    processes.need("wrk", "wrk")
    anchors = processes.find_anchors(None)
    run_dir = WORK / "runs" / "connections"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    with processes.Processes() as running:
        upstream = counting_upstream(anchors, processes.free_port(), run_dir)
        running.start(upstream, scenarios.PATH)
        accepted(upstream)
        measured = gateways(args, anchors, upstream, run_dir)
        for label, server, _ in measured:
            running.start(server, scenarios.PATH, timeout=60)
            rows[label] = []
        for clients in args.clients:
            for label, server, warmup in measured:
                wrk.run(server.url + scenarios.PATH, warmup, clients)
                before = accepted(upstream)
                result = wrk.run(server.url + scenarios.PATH, args.duration, clients)
                connects = accepted(upstream) - before - 1  # the stub_status request itself
                row = {
                    "clients": clients,
                    "rps": result.requests_per_sec,
                    "p99_ms": result.p99_ms,
                    "timeouts": result.errors["timeout"],
                    "errors": sum(result.errors.values()) - result.errors["timeout"],
                    "connects_per_request": max(connects, 0) / max(result.requests, 1),
                    "rss_mb": (processes.rss_kb(server.pid) or 0) / 1024.0,
                }
                rows[label].append(row)
                say("%-22s c=%-5d %9.0f req/s  p99 %8.2f ms  timeouts %d  connects/request "
                    "%.4f  RSS %.0f MB" % (label, clients, row["rps"], row["p99_ms"] or 0,
                                           row["timeouts"], row["connects_per_request"],
                                           row["rss_mb"]))
    print(report(rows, args.clients))
    return 0


def report(rows: dict[str, list[dict]], clients: list[int]) -> str:
    """
    A Markdown table of the run; then each gateway's throughput at its largest count against its
    smallest, and twistgate's against fastify's and nginx's at each count.
    """
    lines = ["| gateway | clients | req/s | p99 ms | timeouts | connects/request | RSS MB |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for label, measured in rows.items():
        for row in measured:
            lines.append("| %s | %d | %.0f | %.2f | %d | %.4f | %.0f |" % (
                label, row["clients"], row["rps"], row["p99_ms"] or 0, row["timeouts"],
                row["connects_per_request"], row["rss_mb"]))
    lines.append("")
    for label, measured in rows.items():
        if len(measured) > 1 and measured[0]["rps"]:
            first, last = measured[0], measured[-1]
            growth = (last["rss_mb"] - first["rss_mb"]) * 1024 / max(
                last["clients"] - first["clients"], 1)
            lines.append("%s: c=%d gives %.2fx the throughput of c=%d; %.1f KB of RSS per extra "
                         "connection" % (label, last["clients"], last["rps"] / first["rps"],
                                         first["clients"], growth))
    for index, count in enumerate(clients):
        for label, measured in rows.items():
            if not label.startswith("twistgate") or index >= len(measured):
                continue
            for other in ("fastify", "nginx proxy"):
                if other in rows and index < len(rows[other]) and rows[other][index]["rps"]:
                    lines.append("c=%d: %s / %s = %.2fx" % (
                        count, label, other, measured[index]["rps"] / rows[other][index]["rps"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
