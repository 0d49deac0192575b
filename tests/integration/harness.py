"""
Real processes on real sockets: a `twistd twistgate` subprocess and upstream servers.

Upstream servers run in the test's own reactor (pytest-twisted) on 127.0.0.1 with ports chosen
at run time, and record what reaches them; the gateway is a real ``twistd -n twistgate`` process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.web import server
from twisted.web.resource import Resource

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("the process exited with %s" % process.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %ss" % (port, timeout))


def twistd_command(config: Path, *extra: str) -> list[str]:
    """twistd, run by the interpreter running the tests (``python -m twisted`` is ``twist``)."""
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
            "--pidfile=", "twistgate", "--config", str(config), *extra]


def environment(*extra_paths: Path) -> dict:
    """The environment of a gateway process: this checkout (and C{extra_paths}) importable."""
    env = dict(os.environ)
    paths = [str(ROOT), *map(str, extra_paths)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return env


class Gateway:
    """A `twistd twistgate` process serving a gw.ini written from C{ini} (``{port}`` filled in)."""

    def __init__(self, directory: Path, ini: str, python_path: tuple[Path, ...] = ()):
        self.directory = directory
        self.port = free_port()
        self.config = directory / "gw.ini"
        self.config.write_text(textwrap.dedent(ini).replace("{port}", str(self.port)))
        self.log_path = directory / "gateway.log"
        self.process: subprocess.Popen | None = None
        self.python_path = python_path

    def start(self) -> Gateway:
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            twistd_command(self.config), stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.directory, env=environment(*self.python_path),
        )
        try:
            wait_for_port(self.port, process=self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError("the gateway did not start:\n" + self.log()) from None
        return self

    def write_config(self, ini: str) -> None:
        """Replace gw.ini (``{port}`` is this gateway's port); a reload then reads it."""
        self.config.write_text(textwrap.dedent(ini).replace("{port}", str(self.port)))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def url(self, path: str = "/") -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def rss(self) -> int:
        """The gateway process's resident memory, in bytes."""
        with open("/proc/%d/status" % self.process.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()


class PeakRSS:
    """The largest resident memory of a gateway process, sampled every 50 ms from now on."""

    def __init__(self, gateway: Gateway, interval: float = 0.05):
        self.gateway = gateway
        self.baseline = self.peak = gateway.rss()
        self._loop = LoopingCall(self._sample)
        self._loop.start(interval)

    def _sample(self) -> None:
        self.peak = max(self.peak, self.gateway.rss())

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._sample()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __repr__(self) -> str:
        return "RSS baseline %.1f MB, peak %.1f MB" % (self.baseline / 2**20, self.peak / 2**20)


class CountingSite(server.Site):
    """A Site that counts the TCP connections it accepted."""

    connections = 0

    def buildProtocol(self, addr):
        self.connections += 1
        return super().buildProtocol(addr)

    def log(self, request):
        pass


class Upstream(Resource):
    """
    A recording upstream. Paths:
      /slow?s=N     answers after N seconds
      /big?n=N      streams N bytes (with backpressure)
      /upload       counts the request body
      anything else a small JSON naming this upstream, the path and the headers it saw.
    """

    isLeaf = True
    health_status = 200

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.seen: list[dict] = []

    def render(self, request):
        headers = {
            k.decode().lower(): [v.decode("latin-1") for v in vs]
            for k, vs in request.requestHeaders.getAllRawHeaders()
        }
        body = request.content.read()
        self.seen.append(
            {"method": request.method.decode(), "uri": request.uri.decode(), "headers": headers,
             "body_length": len(body)}
        )
        path = request.path
        if path == b"/health":
            request.setResponseCode(self.health_status)
            return b"{}"
        if path.endswith(b"/slow"):
            delay = float(request.args.get(b"s", [b"5"])[0])
            d = deferLater(reactor, delay, lambda: None)
            d.addCallback(lambda _: self._finish_json(request, {"slow": delay}))
            d.addErrback(lambda f: f.trap(CancelledError))
            request.notifyFinish().addErrback(lambda _: d.cancel())
            return server.NOT_DONE_YET
        if path.endswith(b"/big"):
            size = int(request.args[b"n"][0])
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % size)
            request.registerProducer(_Bytes(request, size), False)
            return server.NOT_DONE_YET
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-upstream", self.name.encode())
        import json

        return json.dumps(
            {"upstream": self.name, "uri": request.uri.decode(), "headers": headers,
             "body_length": len(body)}
        ).encode()

    def _finish_json(self, request, data):
        import json

        if request._disconnected:
            return
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(data).encode())
        request.finish()


class _Bytes:
    """A pull producer of C{size} bytes."""

    CHUNK = b"x" * 65536

    def __init__(self, request, size):
        self.request = request
        self.left = size

    def resumeProducing(self):
        if self.left <= 0:
            return
        chunk = self.CHUNK[: min(self.left, len(self.CHUNK))]
        self.left -= len(chunk)
        self.request.write(chunk)
        if self.left <= 0:
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self):
        self.left = 0


def serve(resource: Resource) -> tuple[CountingSite, object]:
    """Listen with C{resource} on 127.0.0.1 on a free port; returns (site, listening port)."""
    site = CountingSite(resource)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return site, port


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)
