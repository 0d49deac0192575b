"""
A/B: the CPU each of two revisions of twistgate spends per proxied request, in one run.

    python -m bench.ab BEFORE [AFTER]          AFTER defaults to the work tree
    python -m bench.ab d0d3311 --pypy --rounds 8

Requests per second move with the machine (on this VM the same code measured 18k-25k req/s on
PyPy minutes apart); the CPU a gateway process spends per request moves far less, and comparing
two revisions round by round, interleaved, against one upstream, cancels most of what is left.
Both gateways run the plain scenario's gw.ini (bench/scenarios.py) side by side; each round
loads one of them with wrk and divides the process's user + system time by the requests it
served. Prints each round and the medians, and the change in per cent. Needs what `python -m
bench` needs (its first run prepares bench/.work).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from bench import processes, scenarios, wrk
from bench.processes import REPO, WORK


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[1])
    parser.add_argument("before", help="a commit (exported with git archive)")
    parser.add_argument("after", nargs="?", help="a commit (default: the work tree)")
    parser.add_argument("--pypy", action="store_true",
                        help="run twistgate on PyPy (default: CPython)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per revision (default 6)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per gateway (default 3, PyPy 30)")
    return parser.parse_args(argv)


def tree(rev: str | None) -> tuple[Path, str]:
    if rev is None:
        return REPO, "work tree"
    path, info = processes.export_revision(rev)
    return path, info["commit"][:10]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python = shutil.which("pypy3") if args.pypy else sys.executable
    venv = processes.prepare_twistgate_venv("venv-pypy" if args.pypy else "venv-cpython", python)
    warmup = args.warmup if args.warmup is not None else (30.0 if args.pypy else 3.0)
    anchors = processes.find_anchors(None)
    run_dir = WORK / "runs" / "ab"
    run_dir.mkdir(parents=True, exist_ok=True)
    plain = scenarios.SCENARIOS["plain"]
    trees = [tree(args.before), tree(args.after)]
    with processes.Processes() as running:
        upstream = processes.nginx_upstream(anchors, processes.free_port(), run_dir)
        running.start(upstream)
        gateways = []
        for index, (path, label) in enumerate(trees):
            port = processes.free_port()
            config = run_dir / ("gw-%d.ini" % index)
            config.write_text(scenarios.twistgate_config(plain, port, upstream.port))
            server = processes.twistgate("ab-%d" % index, venv, config, port, run_dir, path)
            running.start(server, scenarios.PATH)
            gateways.append((label, server))
        for _, server in gateways:
            wrk.run(server.url + scenarios.PATH, warmup)
        per_request: dict[str, list[float]] = {label: [] for label, _ in gateways}
        for round_ in range(args.rounds):
            # Alternate which goes first, so that neither always follows the other.
            order = gateways if round_ % 2 == 0 else gateways[::-1]
            for label, server in order:
                cpu = processes.cpu_seconds(server.pid)
                result = wrk.run(server.url + scenarios.PATH, args.duration)
                used = processes.cpu_seconds(server.pid) - cpu
                micros = used / max(result.requests, 1) * 1e6
                per_request[label].append(micros)
                print("round %d  %-10s %8.0f req/s  %6.1f us CPU per request"
                      % (round_ + 1, label, result.requests_per_sec, micros), flush=True)
    (before, b), (after, a) = [(label, statistics.median(per_request[label]))
                               for label, _ in gateways]
    # Each round's pair ran back to back, so their ratio is free of the drift between rounds
    # (PyPy's JIT still settling, the machine's neighbours).
    paired = statistics.median(
        y / x for x, y in zip(per_request[before], per_request[after])
    )
    print("median CPU per request (%s): %s %.1f us, %s %.1f us: %+.1f %%; median of the "
          "rounds' ratios: %+.1f %%" % ("PyPy" if args.pypy else "CPython", before, b, after, a,
                                       (a - b) / b * 100, (paired - 1) * 100))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
