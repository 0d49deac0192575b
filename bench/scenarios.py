"""
The scenarios of issue 13 and the run that measures them.

A scenario is a set of gateways in front of the one nginx upstream, all started at once, each
warmed up, then measured in interleaved rounds (round 2 starts with the second gateway, and so on,
so that no gateway always runs first or last) and summarised by the median of its rounds:

- ``plain``: a plain proxy, every gateway.
- ``jwt``: a JWT check and a rate limit in front of the proxy, twistgate beside Express MODE=full.
- ``cache``: answers from the gateway's cache, twistgate beside Express MODE=cache.
- ``latency``: one connection at a time (wrk -c1) through every gateway and straight at the
  upstream: what each gateway adds to p50 and p99.

twistgate runs as ``twistd -n twistgate`` on CPython and on PyPy, each with the config the
scenario writes. A scenario whose filter is not installed yet (``python -m twistgate check``
refuses the config with "unknown filter") is skipped for that interpreter, not failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import processes, wrk
from bench.processes import Processes, Server, say

#: The path every gateway proxies; nginx answers it with its JSON.
PATH = "/users"

#: A marker of the upstream's body: an answer without it came from somewhere else.
UPSTREAM_MARK = b'"alice"'

#: The HS256 secret of the jwt scenario, shared by twistgate and Express.
JWT_SECRET = "bench-only-secret-of-at-least-32-bytes"


@dataclass(frozen=True)
class Scenario:
    """What one scenario runs."""

    name: str
    title: str
    #: Reference gateways (keys of L{REFERENCES}) measured beside twistgate.
    references: tuple[str, ...]
    #: The twistgate filters ([filter:NAME] use = ...) this scenario needs.
    filters: tuple[str, ...] = ()
    #: wrk connections; None takes the run's --connections.
    connections: int | None = None
    #: Whether the upstream itself is measured too, as the baseline of added latency.
    direct: bool = False
    #: Whether wrk sends a bearer token.
    token: bool = False


SCENARIOS = {
    "plain": Scenario(
        "plain", "plain proxy", ("nginx-proxy", "fastify", "aiohttp", "express-plain")
    ),
    "jwt": Scenario(
        "jwt", "JWT + ratelimit", ("express-full",), filters=("jwt", "ratelimit"), token=True
    ),
    "cache": Scenario("cache", "cache hits", ("express-cache",), filters=("cache",)),
    "latency": Scenario(
        "latency",
        "c=1 added latency",
        ("nginx-proxy", "fastify", "aiohttp", "express-plain"),
        connections=1,
        direct=True,
    ),
}

#: The reference gateways, by key: (label, how it is started).
REFERENCE_LABELS = {
    "nginx-proxy": "nginx proxy (ceiling)",
    "fastify": "fastify + @fastify/http-proxy",
    "aiohttp": "aiohttp + uvloop (CPython)",
    "express-plain": "Express tutorial, MODE=plain",
    "express-full": "Express tutorial, MODE=full",
    "express-cache": "Express tutorial, MODE=cache",
}

#: twistgate's interpreters, by key.
INTERPRETER_LABELS = {"cpython": "CPython", "pypy": "PyPy"}


def twistgate_config(scenario: Scenario, port: int, upstream_port: int) -> str:
    """The gw.ini of twistgate in C{scenario}: as shipped, but for access_log = off."""
    gateway = ["[gateway]", "listen = tcp:%d:interface=127.0.0.1" % port, "access_log = off"]
    route = ["[route:users]", "prefix = %s" % PATH, "upstream = users"]
    sections = []
    if "ratelimit" in scenario.filters:
        # Mirrors Express MODE=full, where the rate limit runs before the JWT check; the rate is
        # far above what the machine can reach, so it never refuses during the run.
        gateway.append("filters = limit")
        sections.append(["[filter:limit]", "use = ratelimit", "rate = 100000000/1s", "key = ip"])
    if "jwt" in scenario.filters:
        route.append("filters = auth")
        sections.append(
            ["[filter:auth]", "use = jwt", "secret = %s" % JWT_SECRET, "algorithms = HS256"]
        )
    if "cache" in scenario.filters:
        route.append("filters = cache")
        sections.append(["[filter:cache]", "use = cache", "ttl = 5m"])
    upstream = ["[upstream:users]", "targets = http://127.0.0.1:%d" % upstream_port]
    blocks = [gateway, upstream, route] + sections
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def hs256_token(secret: str, subject: str = "bench", ttl: int = 86400) -> str:
    """An HS256 JWT (RFC 7519) made with the standard library, valid for C{ttl} seconds."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64(
        json.dumps({"sub": subject, "iat": now, "exp": now + ttl}, separators=(",", ":")).encode()
    )
    signing_input = header + b"." + payload
    signature = b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode("ascii")


_UNKNOWN_FILTER = re.compile(r"unknown filter '([^']+)'")


def unavailable_reason(status: int, stderr: str) -> str | None:
    """Why a scenario is skipped, from C{twistgate check}'s answer; None if the config is fine."""
    if status == 0:
        return None
    missing = sorted(set(_UNKNOWN_FILTER.findall(stderr)))
    if missing:
        return "skipped: filter %s not available" % " ".join(missing)
    return "config refused: " + " | ".join(line for line in stderr.strip().splitlines())


@dataclass
class Target:
    """One column of a scenario: a gateway (or the upstream itself) with its measurements."""

    key: str
    label: str
    kind: str  # "twistgate", "reference" or "direct"
    server: Server
    interpreter: str | None = None
    warmup: float = 0.0
    rounds: list[dict] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict:
        """The median of the rounds, with the round figures it came from."""
        good = [r for r in self.rounds if "requests_per_sec" in r]
        data: dict = {"label": self.label, "kind": self.kind, "interpreter": self.interpreter,
                      "rounds": self.rounds, "error": self.error}
        if not good:
            return data
        rss = [r["rss_kb"] for r in good if r.get("rss_kb")]
        cpu = [r["cpu_percent"] for r in good if r.get("cpu_percent") is not None]
        data["median"] = {
            "requests_per_sec": statistics.median(r["requests_per_sec"] for r in good),
            "p50_ms": _median_of(good, "p50_ms"),
            "p99_ms": _median_of(good, "p99_ms"),
            "rss_mb": round(max(rss) / 1024.0, 1) if rss else None,
            "cpu_percent": round(statistics.median(cpu), 1) if cpu else None,
            "socket_errors": sum(sum(r["errors"].values()) for r in good),
            "non_2xx": sum(r["non_2xx"] for r in good),
            "requests": sum(r["requests"] for r in good),
        }
        return data


def _median_of(rounds: list[dict], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


@dataclass
class Settings:
    """How long and how hard wrk drives each gateway."""

    duration: float = 10.0
    warmup: float = 3.0
    pypy_warmup: float = 10.0
    rounds: int = 3
    connections: int = 50
    threads: int = 1


class Run:
    """
    One benchmark run: the upstream, then each scenario in turn. Every server goes through
    C{self.processes}, which stops them all when the run ends, however it ends.
    """

    def __init__(self, processes_: Processes, anchors: Path, run_dir: Path, settings: Settings,
                 interpreters: dict[str, Path], aiohttp_venv: Path | None,
                 references: bool, tree: Path = processes.REPO):
        self.processes = processes_
        self.anchors = anchors
        self.run_dir = run_dir
        self.settings = settings
        self.interpreters = interpreters  # "cpython"/"pypy" -> venv
        self.aiohttp_venv = aiohttp_venv
        self.references = references
        self.tree = tree  # whose twistgate code runs: the work tree or an exported commit
        self.upstream: Server | None = None
        self.token = hs256_token(JWT_SECRET)

    # -- servers ---------------------------------------------------------------------------

    def start_upstream(self) -> Server:
        port = processes.free_port()
        server = processes.nginx_upstream(self.anchors, port, self.run_dir)
        self.processes.start(server, PATH)
        self.upstream = server
        say("upstream nginx on %s (pid %d)" % (server.url, server.pid))
        return server

    def _reference(self, key: str, port: int) -> Server:
        upstream = self.upstream.url
        run_dir = self.run_dir
        if key == "nginx-proxy":
            return processes.nginx_proxy(self.anchors, port, self.upstream.port, run_dir)
        if key == "fastify":
            anchor = processes.WORK / "fastify-gateway"
            return processes.node_gateway(key, anchor, port, upstream, run_dir)
        if key == "aiohttp":
            anchor = processes.WORK / "aiohttp-gateway"
            return processes.aiohttp_gateway(anchor, self.aiohttp_venv, port, upstream, run_dir)
        if key.startswith("express-"):
            mode = key.split("-", 1)[1]
            anchor = processes.WORK / "express-gateway"
            return processes.node_gateway(
                key, anchor, port, upstream, run_dir, {"MODE": mode, "JWT_SECRET": JWT_SECRET}
            )
        raise KeyError(key)

    def _headers(self, scenario: Scenario) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token} if scenario.token else {}

    def _start(self, target: Target, scenario: Scenario) -> bool:
        """Start a target and check that its answer is the upstream's; False (and why) if not."""
        try:
            body = self.processes.start(target.server, PATH, timeout=60,
                                        headers=self._headers(scenario))
        except processes.StartError as e:
            target.error = str(e)
            say("%s: %s" % (target.label, e))
            self.processes.stop(target.server)
            return False
        if UPSTREAM_MARK not in body:
            target.error = "answered with something else than the upstream's JSON: %r" % body[:200]
            say("%s: %s" % (target.label, target.error))
            self.processes.stop(target.server)
            return False
        say("%s on %s (pid %d)" % (target.label, target.server.url, target.server.pid))
        return True

    # -- one scenario ----------------------------------------------------------------------

    def scenario(self, scenario: Scenario) -> dict:
        """Measure C{scenario}; its results as a JSON-ready dict."""
        say("scenario %s: %s" % (scenario.name, scenario.title))
        directory = self.run_dir / scenario.name
        directory.mkdir(parents=True, exist_ok=True)
        connections = scenario.connections or self.settings.connections
        result: dict = {"name": scenario.name, "title": scenario.title,
                        "connections": connections, "threads": self.settings.threads,
                        "skipped": {}, "gateways": {}}
        targets = self._targets(scenario, directory, result["skipped"])
        started = []
        try:
            for target in targets:
                if target.kind == "direct" or self._start(target, scenario):
                    started.append(target)
            if started:
                load = processes.background_load([t.server.pid for t in started])
                result["background"] = load
                say("background: %s%% of all cores busy before the scenario%s" % (
                    load["busy_percent_of_all_cores"],
                    "".join(" | %(name)s (pid %(pid)d) %(cpu_percent)d%%" % p
                            for p in load["busy_processes"])))
            self._measure(scenario, started, connections)
        finally:
            for target in started:
                if target.kind != "direct":
                    self.processes.stop(target.server)
        for target in targets:
            result["gateways"][target.key] = target.summary()
        return result

    def _targets(self, scenario: Scenario, directory: Path, skipped: dict) -> list[Target]:
        targets = []
        if scenario.direct:
            targets.append(Target("direct", "direct to the upstream (nginx)", "direct",
                                  self.upstream))
        for interpreter, venv in self.interpreters.items():
            key = "twistgate-" + interpreter
            port = processes.free_port()
            config = directory / interpreter / "gw.ini"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(twistgate_config(scenario, port, self.upstream.port))
            reason = unavailable_reason(*processes.twistgate_check(venv, config, self.tree))
            if reason is not None:
                say("twistgate on %s: %s" % (INTERPRETER_LABELS[interpreter], reason))
                skipped[key] = reason
                continue
            server = processes.twistgate(key, venv, config, port, directory, self.tree)
            warmup = self.settings.pypy_warmup if interpreter == "pypy" else self.settings.warmup
            targets.append(Target(key, "twistgate (%s)" % INTERPRETER_LABELS[interpreter],
                                  "twistgate", server, interpreter, warmup))
        if not any(t.kind == "twistgate" for t in targets):
            # Nothing to compare: the references alone would only cost time.
            return []
        if self.references:
            for key in scenario.references:
                if key == "aiohttp" and self.aiohttp_venv is None:
                    continue
                server = self._reference(key, processes.free_port())
                targets.append(Target(key, REFERENCE_LABELS[key], "reference", server,
                                      warmup=self.settings.warmup))
        return targets

    def _measure(self, scenario: Scenario, targets: list[Target], connections: int) -> None:
        settings = self.settings
        headers = self._headers(scenario)
        for target in targets:
            if target.warmup > 0:
                say("warm-up %s: %gs" % (target.label, target.warmup))
                try:
                    wrk.run(target.server.url + PATH, target.warmup, connections,
                            settings.threads, headers)
                except wrk.WrkError as e:
                    target.error = "warm-up failed: %s" % e
                    say("%s: %s" % (target.label, target.error))
        live = [t for t in targets if t.error is None]
        for index in range(settings.rounds):
            order = live[index % len(live):] + live[: index % len(live)] if live else []
            for target in order:
                if target.error is not None:
                    continue
                target.rounds.append(self._round(target, connections, headers))
                last = target.rounds[-1]
                if "error" in last:
                    target.error = last["error"]
                    say("%s: %s" % (target.label, target.error))
                else:
                    say(
                        "round %d/%d %-32s %9.0f req/s  p50 %7.2fms  p99 %7.2fms"
                        % (index + 1, settings.rounds, target.label, last["requests_per_sec"],
                           last["p50_ms"] or 0, last["p99_ms"] or 0)
                    )

    def _round(self, target: Target, connections: int, headers: dict[str, str]) -> dict:
        settings = self.settings
        server = target.server
        if target.kind != "direct" and not server.alive():
            return {"error": "exited with %s; log ends:\n%s"
                    % (server.process.returncode, server.log_tail())}
        cpu_before = processes.cpu_seconds(server.pid)
        started = time.monotonic()
        try:
            result = wrk.run(server.url + PATH, settings.duration, connections,
                             settings.threads, headers)
        except wrk.WrkError as e:
            return {"error": str(e)}
        elapsed = time.monotonic() - started
        cpu_used = processes.cpu_seconds(server.pid) - cpu_before
        data = result.to_json()
        data["rss_kb"] = processes.rss_kb(server.pid)
        data["cpu_percent"] = round(100.0 * cpu_used / elapsed, 1) if elapsed > 0 else None
        return data
