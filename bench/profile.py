"""
``python -m bench.profile``: where twistgate's time goes while it proxies under load.

Starts the nginx upstream and twistgate on CPython (the ``plain`` scenario's config, or
``--scenario jwt``), warms it up, drives it with wrk and, meanwhile, samples it with py-spy
(installed into bench/.work/venv-cpython on first use): once to a raw file of collapsed stacks,
whose figures this prints (self and inclusive share of samples per function, self share per
module), and once to a flame graph (``profile.svg``). Output goes to bench/results/profile/.

py-spy pauses the process for each sample (unless ``--nonblocking``), so throughput while
profiling is lower than in ``python -m bench``: read the shares, not the req/s.

``--pypy`` profiles twistgate on PyPy instead, with vmprof (installed into bench/.work/venv-pypy
on first use; py-spy cannot read PyPy's frames): twistd runs under ``python -m vmprof`` from the
start, the profile covers the warm-up and the measured run, and is read when twistd has stopped.
Time in native code (system calls, the JIT's helpers, the garbage collector) shows as "native
code called from" the Python function that called it.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import processes, scenarios, wrk
from bench.processes import Processes, say

OUT = processes.HERE / "results" / "profile"

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one C{frame;frame;...;leaf COUNT} per line, outermost first."""
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_parts(frame: str) -> tuple[str, str]:
    """(function, file) of one collapsed frame such as C{render (twistgate/router.py:120)}."""
    found = _FRAME.match(frame)
    if not found:
        return frame, ""
    return found.group("function"), found.group("file")


def area(file: str) -> str:
    """The part of the code a file belongs to, for the per-module shares."""
    if file.startswith("twistgate/"):
        return file
    if file.startswith("twisted/"):
        return file
    if not file:
        return "(native or unknown)"
    first = file.split("/", 1)[0]
    return first if "/" in file else "stdlib: " + file


def summarise(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    """Self and inclusive shares of samples, by function and by module."""
    total = sum(count for _, count in stacks)
    if not total:
        return "no samples"
    self_by_function: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    self_by_module: collections.Counter = collections.Counter()
    for frames, count in stacks:
        leaf = frames[-1]
        self_by_function[leaf] += count
        self_by_module[area(frame_parts(leaf)[1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = ["%d samples" % total, "", "self time by function (top %d)" % top]
    for frame, count in self_by_function.most_common(top):
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, frame))
    lines += ["", "inclusive time by function (top %d; the event loop's frames are ~100%%)" % top]
    for frame, count in inclusive.most_common(top + 15)[: top + 15]:
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, frame))
    lines += ["", "self time by module"]
    for module, count in self_by_module.most_common(30):
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, module))
    return "\n".join(lines)


def ensure_py_spy(venv: Path) -> Path:
    binary = venv / "bin" / "py-spy"
    if not binary.exists():
        say("installing py-spy into %s" % venv)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "py-spy"],
                       check=True, timeout=600)
    return binary


def record(py_spy: Path, pid: int, seconds: float, rate: int, fmt: str, output: Path,
           nonblocking: bool) -> None:
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", "%d" % seconds,
            "--rate", str(rate), "--format", fmt, "--output", str(output)]
    # One entry per function: without line numbers in the raw file, by first line in the graph.
    argv.append("--nolineno" if fmt == "raw" else "--function")
    if nonblocking:
        argv.append("--nonblocking")
    say("  $ " + " ".join(argv))
    subprocess.run(argv, check=True, timeout=seconds + 60, stdout=subprocess.DEVNULL)


def ensure_vmprof(venv: Path) -> None:
    python = str(venv / "bin" / "python")
    if subprocess.run([python, "-c", "import vmprof"], capture_output=True).returncode:
        say("installing vmprof into %s" % venv)
        subprocess.run([python, "-m", "pip", "install", "vmprof"], check=True, timeout=600)


_VMPROF_READER = r"""
import json, sys, vmprof
stats = vmprof.read_profile(sys.argv[1])
stacks = []
for profile in stats.profiles:
    frames = []
    caller = "?"
    for address in profile[0]:
        name = stats.adr_dict.get(address)
        if name is None:
            frames.append(["native code called from " + caller, ""])
        else:
            parts = name.split(":")
            frames.append([parts[1], parts[-1]] if len(parts) >= 4 else [name, ""])
            caller = frames[-1][0]
    stacks.append([frames, profile[1]])
json.dump(stacks, sys.stdout)
"""


def read_vmprof(venv: Path, profile: Path) -> list[tuple[list[str], int]]:
    """A vmprof profile as C{(frames, count)} stacks, outermost frame first, as py-spy's."""
    done = subprocess.run([str(venv / "bin" / "python"), "-c", _VMPROF_READER, str(profile)],
                          check=True, capture_output=True, text=True, timeout=600)
    stacks = []
    for frames, count in json.loads(done.stdout):
        stacks.append(
            (["%s (%s)" % (name, short_path(file)) if file else name for name, file in frames],
             count))
    return stacks


def short_path(file: str) -> str:
    """A source path as py-spy names it: from the package down."""
    for marker in ("/site-packages/", str(processes.REPO) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--scenario", choices=["plain", "jwt"], default="plain")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of sampling per output (default 20)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second (default 200)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--nonblocking", action="store_true",
                        help="do not pause twistgate for each sample")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--anchors")
    parser.add_argument("--rev", help="profile this commit's twistgate instead of the work tree")
    parser.add_argument("--pypy", action="store_true",
                        help="profile twistgate on PyPy with vmprof instead of CPython with py-spy")
    parser.add_argument("--pypy-bin", default="pypy3")
    args = parser.parse_args(argv)
    if args.rev:
        tree, state = processes.export_revision(args.rev)
    else:
        tree, state = processes.REPO, processes.tree_state()

    anchors = processes.find_anchors(args.anchors)
    if args.pypy:
        return profile_pypy(args, tree, state, anchors)
    python = getattr(sys, "_base_executable", None) or sys.executable
    venv = processes.prepare_twistgate_venv("venv-cpython", python)
    py_spy = ensure_py_spy(venv)
    args.out.mkdir(parents=True, exist_ok=True)
    with Processes() as running:
        server, url, headers = start_gateway(running, args, anchors, "cpython", venv, tree)
        say("warm-up %gs, then without the profiler for %gs" % (args.warmup, args.duration))
        wrk.run(url, args.warmup, args.connections, 1, headers)
        baseline = wrk.run(url, args.duration, args.connections, 1, headers)
        say("without the profiler: %.0f req/s" % baseline.requests_per_sec)
        load_seconds = 2 * args.duration + 10
        load = subprocess.Popen(
            wrk.command(url, load_seconds, args.connections, 1, headers),
            stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1)
            name = "profile-%s%s" % (args.scenario, "-" + args.rev if args.rev else "")
            raw = args.out / (name + ".txt")
            svg = args.out / (name + ".svg")
            record(py_spy, server.pid, args.duration, args.rate, "raw", raw, args.nonblocking)
            record(py_spy, server.pid, args.duration, args.rate, "flamegraph", svg,
                   args.nonblocking)
            output, _ = load.communicate(timeout=load_seconds + 30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        under = wrk.parse(output)
        summary = summarise(parse_collapsed(raw.read_text()))
        header = (
            "twistgate on CPython, scenario %s, wrk -t1 -c%d: %.0f req/s without the profiler, "
            "%.0f req/s while sampled at %d Hz%s"
            % (args.scenario, args.connections, baseline.requests_per_sec,
               under.requests_per_sec, args.rate, " (nonblocking)" if args.nonblocking else "")
        )
        text = header + "\n" + describe_code(args, state) + "\n\n" + summary + "\n"
        (args.out / (name + "-summary.txt")).write_text(text)
        print(text)
        say("raw stacks: %s; flame graph: %s" % (raw, svg))
    return 0


def start_gateway(running: Processes, args, anchors: Path, interpreter: str, venv: Path,
                  tree: Path, prefix: list[str] = ()) -> tuple:
    """
    The nginx upstream and twistgate in front of it (twistd's command after C{prefix}), for the
    chosen scenario: (the twistd server, the URL to load, the request headers to send).
    """
    run_dir = processes.WORK / "runs" / (
        "profile-%s-%s" % (interpreter, time.strftime("%Y%m%dT%H%M%S")))
    scenario = scenarios.SCENARIOS[args.scenario]
    headers = ({"Authorization": "Bearer " + scenarios.hs256_token(scenarios.JWT_SECRET)}
               if scenario.token else {})
    run = scenarios.Run(running, anchors, run_dir, scenarios.Settings(), {interpreter: venv},
                        None, references=False, tree=tree)
    upstream = run.start_upstream()
    port = processes.free_port()
    config = run_dir / "gw.ini"
    config.write_text(scenarios.twistgate_config(scenario, port, upstream.port))
    server = processes.twistgate("twistgate-" + interpreter, venv, config, port, run_dir, tree)
    server.argv = list(prefix) + server.argv
    running.start(server, scenarios.PATH, timeout=60, headers=headers)
    return server, server.url + scenarios.PATH, headers


def describe_code(args, state: dict) -> str:
    return "twistgate code: %s %s (%s)%s" % (
        "commit" if args.rev else "work tree at", (state.get("commit") or "?")[:10],
        state.get("subject", ""),
        "; uncommitted: " + " ".join(state["uncommitted"]) if state.get("uncommitted") else "")


def profile_pypy(args, tree: Path, state: dict, anchors: Path) -> int:
    """The PyPy profile: twistd under vmprof through warm-up and load, read once it stops."""
    pypy = shutil.which(args.pypy_bin)
    if pypy is None:
        raise SystemExit("%s is not installed (apt-get install -y pypy3 pypy3-venv)"
                         % args.pypy_bin)
    venv = processes.prepare_twistgate_venv("venv-pypy", pypy)
    ensure_vmprof(venv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "profile-pypy-%s%s" % (args.scenario, "-" + args.rev if args.rev else "")
    profile = args.out / (name + ".vmprof")
    warmup = max(args.warmup, 10.0)
    with Processes() as running:
        # venv/bin/twistd is a Python script: vmprof runs it as its program.
        vmprof = [str(venv / "bin" / "python"), "-m", "vmprof", "-o", str(profile)]
        server, url, headers = start_gateway(running, args, anchors, "pypy", venv, tree, vmprof)
        say("warm-up %gs, then %gs of load, all under vmprof" % (warmup, args.duration))
        wrk.run(url, warmup, args.connections, 1, headers)
        under = wrk.run(url, args.duration, args.connections, 1, headers)
        running.servers.remove(server)
        server.stop(grace=60)  # vmprof writes its file as twistd exits
    summary = summarise(read_vmprof(venv, profile))
    header = "twistgate on PyPy, scenario %s, wrk -t1 -c%d: %.0f req/s under vmprof" % (
        args.scenario, args.connections, under.requests_per_sec)
    text = header + "\n" + describe_code(args, state) + "\n\n" + summary + "\n"
    (args.out / (name + "-summary.txt")).write_text(text)
    print(text)
    say("profile: %s (vmprof; `vmprofshow %s` for a tree)" % (profile, profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
