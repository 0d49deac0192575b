"""
The servers of a benchmark run: making them ready, starting them, waiting for them, stopping them.

Everything a run needs that is not in this repository lands in ``bench/.work/`` (git-ignored):
copies of the reference gateways from ``shared/anchors`` (read-only there) with their
``node_modules``, and three virtualenvs: ``venv-cpython`` and ``venv-pypy`` with
``pip install <repo>`` (which also proves that twistgate installs on that interpreter) and
``venv-aiohttp`` with the aiohttp anchor's pinned requirements. The gateway that runs is the work
tree's: twistd is started with the repository first on ``PYTHONPATH``, so the installed copy only
supplies the dependencies, and an edit is measured without reinstalling.

Every server is started in a session of its own (so a Ctrl-C in the terminal reaches this program
alone) and registered with a L{Processes}, which stops them all, by their process group id, when
the run ends in any way: finished, failed, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"

#: The reference gateways this benchmark copies from shared/anchors.
ANCHOR_DIRS = ("express-gateway", "fastify-gateway", "aiohttp-gateway")


class SetupError(RuntimeError):
    """Something a run needs could not be installed or found."""


class StartError(RuntimeError):
    """A server did not come up."""


def say(message: str) -> None:
    print("bench: " + message, file=sys.stderr, flush=True)


def find_anchors(explicit: str | None = None) -> Path:
    """
    The shared anchors directory: C{explicit}, C{$BENCH_ANCHORS}, or C{shared/anchors} beside the
    repository or in C{/work/shared}.
    """
    candidates = [explicit, os.environ.get("BENCH_ANCHORS")]
    candidates += [str(REPO.parent / "shared" / "anchors"), "/work/shared/anchors"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "upstream.conf").is_file():
            return Path(candidate).resolve()
    raise SetupError("no anchors directory (shared/anchors): give --anchors PATH")


# ------------------------------------------------------------------------------------------
# Ports, memory, CPU


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """C{pid} and every process below it."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            for task in os.listdir("/proc/%d/task" % current):
                with open("/proc/%d/task/%s/children" % (current, task)) as f:
                    found.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def rss_kb(pid: int) -> int | None:
    """The resident memory (VmRSS, kB) of C{pid} and its children; None if it is gone."""
    total = 0
    seen = False
    for each in descendants(pid):
        try:
            with open("/proc/%d/status" % each) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        seen = True
                        break
        except OSError:
            continue
    return total if seen else None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by C{pid} and its children (0 if gone)."""
    total = 0
    for each in descendants(pid):
        try:
            with open("/proc/%d/stat" % each) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "pid (comm)": state is field 3, utime 14 and stime 15 (proc(5)).
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _all_cpu_ticks() -> dict[int, tuple[int, str]]:
    """CPU ticks (user + system) and command name of every process."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        ticks[int(entry)] = (int(fields[11]) + int(fields[12]), head.split("(", 1)[1])
    return ticks


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def background_load(ours: list[int], seconds: float = 2.0) -> dict:
    """
    How busy the machine is while this run's servers sit idle: the share of all cores in use,
    and the processes (not this run's) that used more than 5 % of a core. Other work on the
    machine takes cores from the gateways and wrk, so the figures are only as good as this.
    """
    mine = set()
    for pid in ours + [os.getpid()]:
        mine.update(descendants(pid))
    before, busy_before = _all_cpu_ticks(), _machine_ticks()
    time.sleep(seconds)
    after, busy_after = _all_cpu_ticks(), _machine_ticks()
    busy = busy_after[0] - busy_before[0]
    total = busy_after[1] - busy_before[1]
    others = []
    for pid, (ticks, name) in after.items():
        if pid in mine or pid not in before:
            continue
        share = 100.0 * (ticks - before[pid][0]) / _TICKS / seconds
        if share > 5:
            others.append({"pid": pid, "name": name, "cpu_percent": round(share)})
    others.sort(key=lambda p: -p["cpu_percent"])
    return {
        "busy_percent_of_all_cores": round(100.0 * busy / total, 1) if total else None,
        "busy_processes": others[:8],
    }


# ------------------------------------------------------------------------------------------
# Starting and stopping


@dataclass
class Server:
    """One process of a run: a gateway, the upstream, or nginx as a proxy."""

    name: str
    argv: list[str]
    port: int
    log: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=str(self.cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after C{grace} seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        pgid = process.pid  # start_new_session: the server leads a group of its own id
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)
        # nginx's workers and the like: anything left in the group goes too.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Processes:
    """
    The servers started so far, stopped in reverse order on L{stop_all}. Use as a context
    manager; it also turns SIGTERM and SIGHUP into an exit, so that cleanup runs then too.
    """

    def __init__(self):
        self.servers: list[Server] = []
        self._old_handlers: dict = {}

    def __enter__(self) -> Processes:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[signum] = signal.signal(signum, _exit_on_signal)
        # Ctrl-C raises KeyboardInterrupt even where SIGINT came in ignored (a job started with
        # '&' by a non-interactive shell), so that an interrupt always stops the servers.
        self._old_handlers[signal.SIGINT] = signal.signal(signal.SIGINT,
                                                          signal.default_int_handler)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)

    def start(self, server: Server, ready_path: str = "/", timeout: float = 30.0,
              headers: dict[str, str] | None = None) -> bytes:
        """Start C{server}, wait until it answers C{ready_path} with 2xx; that answer's body."""
        self.servers.append(server)
        server.start()
        return wait_until_ready(server, ready_path, timeout, headers)

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        while self.servers:
            server = self.servers.pop()
            try:
                server.stop()
            except Exception as e:  # keep stopping the others
                say("could not stop %s (pid %s): %s" % (server.name, server.process.pid, e))


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def wait_until_ready(server: Server, path: str, timeout: float,
                     headers: dict[str, str] | None = None) -> bytes:
    """Poll C{server} until C{GET path} answers 2xx; its body. L{StartError} if it never does."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise StartError(
                "%s exited with %s before it was ready; its log (%s) ends:\n%s"
                % (server.name, server.process.returncode, server.log, server.log_tail())
            )
        try:
            return http_get(server.url + path, headers)
        except (OSError, urllib.error.URLError) as e:
            problem = str(e)
        time.sleep(0.2)
    raise StartError(
        "%s did not answer %s within %ds (%s); its log (%s) ends:\n%s"
        % (server.name, path, timeout, problem, server.log, server.log_tail())
    )


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> bytes:
    """The body of a 2xx answer to C{GET url}; an OSError for anything else."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.read()


# ------------------------------------------------------------------------------------------
# The servers


def nginx_config(anchors: Path, name: str, replacements: dict[str, str]) -> str:
    """An anchor nginx config with its fixed ports replaced by the run's."""
    text = (anchors / name).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise SetupError("%s no longer mentions %s: update bench/processes.py" % (name, old))
        text = text.replace(old, new)
    return text


def nginx(name: str, anchors: Path, conf: str, port: int, replacements: dict[str, str],
          run_dir: Path) -> Server:
    """nginx in the foreground with an anchor config, its prefix (pid, logs) in a directory."""
    prefix = run_dir / name
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / conf).write_text(nginx_config(anchors, conf, replacements))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return Server(
        name=name,
        # -e: errors before the config's error_log is read go here, not to /var/log/nginx.
        argv=[binary, "-p", str(prefix), "-c", str(prefix / conf), "-e", str(prefix / "early.log")],
        port=port,
        log=prefix / "stdout.log",
        cwd=prefix,
    )


def nginx_upstream(anchors: Path, port: int, run_dir: Path) -> Server:
    """The stand-in upstream service: a ~160-byte JSON on every path."""
    return nginx("upstream", anchors, "upstream.conf", port, {"18081": str(port)}, run_dir)


def nginx_proxy(anchors: Path, port: int, upstream_port: int, run_dir: Path) -> Server:
    """nginx as a keep-alive reverse proxy: the practical ceiling."""
    return nginx(
        "nginx-proxy", anchors, "proxy.conf", port,
        {"18082": str(port), "18081": str(upstream_port)}, run_dir,
    )


def twistgate(name: str, venv: Path, config: Path, port: int, run_dir: Path,
              tree: Path = REPO) -> Server:
    """C{twistd -n --pidfile= twistgate --config CONFIG}, with C{tree}'s code first."""
    return Server(
        name=name,
        argv=[str(venv / "bin" / "twistd"), "-n", "--pidfile=", "twistgate", "--config",
              str(config)],
        port=port,
        log=run_dir / (name + ".log"),
        cwd=config.parent,
        env=tree_env(tree),
    )


def tree_env(tree: Path = REPO) -> dict[str, str]:
    """The environment that makes a venv's interpreter import twistgate from C{tree}."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(tree) + (os.pathsep + path if path else "")}


def twistgate_check(venv: Path, config: Path, tree: Path = REPO) -> tuple[int, str]:
    """C{python -m twistgate check CONFIG} with C{venv}'s interpreter: (exit status, stderr)."""
    env = dict(os.environ)
    env.update(tree_env(tree))
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "twistgate", "check", str(config)],
        cwd=str(config.parent), env=env, capture_output=True, text=True, timeout=120,
    )
    return done.returncode, done.stderr


def node_gateway(name: str, anchor: Path, port: int, upstream: str, run_dir: Path,
                 extra_env: dict[str, str] | None = None) -> Server:
    """One of the Node.js anchors: C{node index.js} with PORT and USER_SERVICE_URL."""
    env = {"PORT": str(port), "USER_SERVICE_URL": upstream}
    env.update(extra_env or {})
    return Server(
        name=name,
        argv=[shutil.which("node") or "node", "index.js"],
        port=port,
        log=run_dir / (name + ".log"),
        cwd=anchor,
        env=env,
    )


def aiohttp_gateway(anchor: Path, venv: Path, port: int, upstream: str, run_dir: Path) -> Server:
    """The aiohttp + uvloop anchor, on CPython in its own venv."""
    return Server(
        name="aiohttp",
        argv=[str(venv / "bin" / "python"), "server.py"],
        port=port,
        log=run_dir / "aiohttp.log",
        cwd=anchor,
        env={"PORT": str(port), "USER_SERVICE_URL": upstream},
    )


# ------------------------------------------------------------------------------------------
# Making bench/.work ready


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _stamp_ok(stamp: Path, digest: str) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == digest


def _run_setup(argv: list[str], log: Path, cwd: Path | None = None, timeout: int = 900) -> None:
    say("  $ " + " ".join(argv))
    with open(log, "ab") as out:
        done = subprocess.run(argv, cwd=cwd and str(cwd), stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SetupError("%s exited %d (log %s):\n%s" % (argv[0], done.returncode, log, tail))


def prepare_anchor(anchors: Path, name: str) -> Path:
    """A writable copy of an anchor under bench/.work, with its node_modules when it has some."""
    source = anchors / name
    target = WORK / name
    files = sorted(p for p in source.iterdir() if p.is_file())
    digest = _digest(*files)
    stamp = target / ".bench-ready"
    if _stamp_ok(stamp, digest):
        return target
    say("preparing %s in %s" % (name, target))
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        destination = target / path.name
        shutil.copyfile(path, destination)
        destination.chmod(0o644)
    if (target / "package-lock.json").is_file():
        if shutil.which("npm") is None:
            raise SetupError("npm is not installed: the Node.js anchors need Node 20 and npm")
        _run_setup(["npm", "ci", "--no-audit", "--no-fund"], WORK / (name + "-npm.log"), target)
    stamp.write_text(digest)
    return target


def prepare_venv(name: str, python: str, requirements: list[str], inputs: list[Path]) -> Path:
    """
    A virtualenv C{bench/.work/NAME} made by C{python} with C{pip install REQUIREMENTS}; made
    again only when one of C{inputs} (setup.py, requirements.txt) changed.
    """
    venv = WORK / name
    digest = _digest(*inputs) + python
    stamp = venv / ".bench-ready"
    if _stamp_ok(stamp, digest):
        return venv
    log = WORK / (name + "-install.log")
    say("preparing %s with %s (log: %s)" % (venv, python, log))
    if not (venv / "bin" / "python").exists():
        _run_setup([python, "-m", "venv", str(venv)], log)
    _run_setup([str(venv / "bin" / "python"), "-m", "pip", "install", *requirements], log)
    stamp.write_text(digest)
    return venv


#: What is not copied into the snapshot that pip installs from.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".tox", ".venv*", "bench", "build", "dist", "*.egg-info", "__pycache__",
    "dropin.cache", ".hypothesis", ".pytest_cache", ".ruff_cache", "artifacts",
)


def prepare_twistgate_venv(name: str, python: str) -> Path:
    """
    A venv with C{pip install <repo>}: twistgate's dependencies for that interpreter. pip installs
    from a snapshot of the work tree under bench/.work, so that its build directories and
    egg-info land there rather than in the tree others are working in.
    """
    if _stamp_ok(WORK / name / ".bench-ready", _digest(REPO / "setup.py") + python):
        return WORK / name
    snapshot = WORK / "src"
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(REPO, snapshot, ignore=_NOT_SOURCE)
    return prepare_venv(name, python, [str(snapshot)], [REPO / "setup.py"])


def prepare_aiohttp_venv(anchor: Path) -> Path:
    requirements = anchor / "requirements.txt"
    return prepare_venv(
        "venv-aiohttp", sys.executable, ["-r", str(requirements)], [requirements]
    )


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise SetupError("git %s: %s" % (" ".join(args), done.stderr.strip()))
    return done.stdout


def tree_state() -> dict:
    """The commit the work tree is on, and the files of twistgate that differ from it."""
    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--", "twistgate", "twisted", "setup.py")
    except (SetupError, OSError, subprocess.TimeoutExpired) as e:
        return {"commit": None, "problem": str(e)}
    return {"commit": commit, "subject": git("log", "-1", "--format=%s").strip(),
            "uncommitted": [line[3:] for line in changed.splitlines()]}


def export_revision(rev: str) -> tuple[Path, dict]:
    """
    The files of commit C{rev} under bench/.work/trees/SHA (read with git archive: the
    repository is not changed), to measure a committed revision instead of the work tree.
    """
    sha = git("rev-parse", "--verify", rev + "^{commit}").strip()
    target = WORK / "trees" / sha
    if not (target / "twistgate" / "__init__.py").is_file():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha],
                                 capture_output=True, timeout=120, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True,
                       timeout=120)
    return target, {"commit": sha, "subject": git("log", "-1", "--format=%s", sha).strip(),
                    "uncommitted": [], "exported_to": str(target)}


def need(program: str, package: str) -> None:
    if shutil.which(program) is None and not Path("/usr/sbin/" + program).exists():
        raise SetupError("%s is not installed (apt-get install -y %s)" % (program, package))
