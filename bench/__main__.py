"""
``python -m bench``: twistgate beside the reference gateways, on loopback, driven by wrk.

    python -m bench                      every scenario, CPython and PyPy (a quarter of an hour)
    python -m bench --quick              a smoke test: short runs, one round
    python -m bench --scenario plain     one scenario (plain, jwt, cache, latency; repeatable)
    python -m bench --only-twistgate     twistgate alone (no reference gateways)
    python -m bench --no-pypy            CPython only

It prepares what it needs under bench/.work (copies of shared/anchors with their node_modules,
virtualenvs for twistgate on CPython and PyPy and for the aiohttp anchor), starts an nginx
upstream, measures each scenario, prints a table per scenario and interpreter and the targets of
issue 13, and writes every figure to bench/results/latest.json. Needs nginx, wrk, node and npm,
and pypy3 for the PyPy runs (docs/performance.md).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import processes, report, scenarios
from bench.processes import Processes, SetupError, StartError, say

RESULTS = processes.HERE / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark twistgate beside nginx, fastify, aiohttp and Express (issue 13).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 2s runs, 1 round, short warm-ups")
    parser.add_argument("--scenario", action="append", choices=sorted(scenarios.SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--only-twistgate", action="store_true",
                        help="measure twistgate alone, without the reference gateways")
    parser.add_argument("--pypy", action=argparse.BooleanOptionalAction, default=None,
                        help="also run twistgate on PyPy (default: when pypy3 is installed)")
    parser.add_argument("--cpython", action=argparse.BooleanOptionalAction, default=True,
                        help="run twistgate on CPython (default: yes)")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per gateway (default 3)")
    parser.add_argument("--pypy-warmup", type=float,
                        help="warm-up seconds for twistgate on PyPy (default 10)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int,
                        help="wrk connections (default 50; the latency scenario always uses 1)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--python", default=None,
                        help="the CPython that makes twistgate's CPython venv and the aiohttp "
                             "venv (default: the one running this)")
    parser.add_argument("--pypy-bin", default="pypy3", help="the PyPy (default: pypy3)")
    parser.add_argument("--anchors", help="the shared/anchors directory (default: found)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json",
                        help="where the results go (default: bench/results/latest.json)")
    parser.add_argument("--rev", help="measure this commit's twistgate (exported with git "
                        "archive) instead of the work tree, e.g. to compare before/after")
    parser.add_argument("--setup-only", action="store_true",
                        help="prepare bench/.work and exit")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"duration": 2.0 if quick else 10.0, "warmup": 1.0 if quick else 3.0,
                "pypy_warmup": 3.0 if quick else 10.0, "rounds": 1 if quick else 3,
                "connections": 50}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    return args


def base_python(explicit: str | None) -> str:
    """The CPython to make venvs with: a venv's own base interpreter rather than the venv."""
    if explicit:
        return explicit
    return getattr(sys, "_base_executable", None) or sys.executable


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unavailable (%s)" % e
    # wrk -v exits 1 after printing its version: take the first line whatever the status.
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def package_version(anchor: Path, package: str) -> str | None:
    import json

    try:
        return json.loads((anchor / "node_modules" / package / "package.json").read_text())[
            "version"]
    except (OSError, ValueError, KeyError):
        return None


def prepare(args, selected: list[scenarios.Scenario]) -> dict:
    """Make bench/.work ready for the selected scenarios; what was prepared, with versions."""
    processes.need("nginx", "nginx-light")
    processes.need("wrk", "wrk")
    processes.WORK.mkdir(parents=True, exist_ok=True)
    anchors = processes.find_anchors(args.anchors)
    references = not args.only_twistgate
    wanted = {key for scenario in selected for key in scenario.references} if references else set()
    prepared: dict = {"anchors": str(anchors), "interpreters": {}, "aiohttp_venv": None,
                      "versions": {}, "tree": processes.REPO,
                      "tree_state": processes.tree_state()}
    if args.rev:
        prepared["tree"], prepared["tree_state"] = processes.export_revision(args.rev)
    versions = prepared["versions"]
    versions["nginx"] = version_of(["nginx", "-v"])
    versions["wrk"] = version_of(["wrk", "-v"]).split(" Copyright")[0]
    python = base_python(args.python)
    if args.cpython:
        venv = processes.prepare_twistgate_venv("venv-cpython", python)
        prepared["interpreters"]["cpython"] = venv
    pypy = args.pypy
    if pypy is None:
        pypy = shutil.which(args.pypy_bin) is not None
        if not pypy:
            say("no %s here: twistgate runs on CPython only (apt-get install -y pypy3)"
                % args.pypy_bin)
    if pypy:
        if shutil.which(args.pypy_bin) is None:
            raise SetupError("%s is not installed (apt-get install -y pypy3 pypy3-venv)"
                             % args.pypy_bin)
        venv = processes.prepare_twistgate_venv("venv-pypy", shutil.which(args.pypy_bin))
        prepared["interpreters"]["pypy"] = venv
    if not prepared["interpreters"]:
        raise SetupError("neither CPython nor PyPy chosen: nothing to measure")
    probe = ("import sys, platform, twisted; print(platform.python_implementation(), "
             "sys.version.split()[0], 'Twisted', twisted.__version__)")
    for name, venv in prepared["interpreters"].items():
        versions["twistgate-" + name] = version_of([str(venv / "bin" / "python"), "-c", probe])
    if any(key in wanted for key in ("fastify", "express-plain", "express-full",
                                     "express-cache")):
        processes.need("node", "nodejs")
        versions["node"] = version_of(["node", "--version"])
    if "fastify" in wanted:
        anchor = processes.prepare_anchor(anchors, "fastify-gateway")
        versions["fastify"] = "fastify %s, @fastify/http-proxy %s" % (
            package_version(anchor, "fastify"), package_version(anchor, "@fastify/http-proxy"))
    if any(key.startswith("express-") for key in wanted):
        anchor = processes.prepare_anchor(anchors, "express-gateway")
        versions["express"] = "express %s, http-proxy-middleware %s" % (
            package_version(anchor, "express"), package_version(anchor, "http-proxy-middleware"))
    if "aiohttp" in wanted:
        anchor = processes.prepare_anchor(anchors, "aiohttp-gateway")
        venv = processes.prepare_aiohttp_venv(anchor)
        prepared["aiohttp_venv"] = venv
        versions["aiohttp"] = version_of(
            [str(venv / "bin" / "python"), "-c",
             "import sys, aiohttp, uvloop; print('CPython', sys.version.split()[0], 'aiohttp', "
             "aiohttp.__version__, 'uvloop', uvloop.__version__)"])
    return prepared


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.scenario or list(scenarios.SCENARIOS)
    selected = [scenarios.SCENARIOS[name] for name in dict.fromkeys(names)]
    try:
        prepared = prepare(args, selected)
    except (SetupError, subprocess.TimeoutExpired) as e:
        say("setup failed: %s" % e)
        return 2
    if args.setup_only:
        say("bench/.work is ready")
        return 0
    settings = scenarios.Settings(
        duration=args.duration, warmup=args.warmup, pypy_warmup=args.pypy_warmup,
        rounds=args.rounds, connections=args.connections, threads=args.threads,
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_dir = processes.WORK / "runs" / stamp
    results: dict = {
        "date": started.isoformat(timespec="seconds"),
        "machine": report.machine(),
        "settings": {"duration": settings.duration, "warmup": settings.warmup,
                     "pypy_warmup": settings.pypy_warmup, "rounds": settings.rounds,
                     "connections": settings.connections, "threads": settings.threads,
                     "quick": args.quick, "only_twistgate": args.only_twistgate},
        "versions": prepared["versions"],
        "twistgate_code": prepared["tree_state"],
        "run_dir": str(run_dir),
        "load_average": {"start": report.load_average()},
        "scenarios": {},
        "complete": False,
    }
    status = 0
    with Processes() as running:
        run = scenarios.Run(
            running, Path(prepared["anchors"]), run_dir, settings,
            prepared["interpreters"], prepared["aiohttp_venv"], not args.only_twistgate,
            prepared["tree"],
        )
        try:
            run.start_upstream()
            for scenario in selected:
                began = time.monotonic()
                outcome = run.scenario(scenario)
                outcome["seconds"] = round(time.monotonic() - began, 1)
                outcome["load_average_after"] = report.load_average()
                results["scenarios"][scenario.name] = outcome
            results["complete"] = True
        except KeyboardInterrupt:
            say("interrupted: stopping every server this run started")
            status = 130
        except SystemExit as e:
            say("stopped by a signal: stopping every server this run started")
            status = e.code if isinstance(e.code, int) else 1
        except StartError as e:
            say("the upstream did not start: %s" % e)
            status = 1
    results["load_average"]["end"] = report.load_average()
    results["targets"] = report.targets(results)
    print(report.text(results), flush=True)
    report.save(results, args.json)
    if args.json == RESULTS / "latest.json":
        report.save(results, RESULTS / ("run-%s.json" % stamp))
    say("results: %s (server logs in %s)" % (args.json, run_dir))
    return status


if __name__ == "__main__":
    sys.exit(main())
