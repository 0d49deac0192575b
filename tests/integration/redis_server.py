"""
A real ``redis-server`` for tests: loopback only, a free port, nothing saved, in a temporary dir.

scripts/test installs redis-server (Debian's package); a test that needs one and cannot find the
binary fails rather than skips, so that a machine without it never reports the Redis store green.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.harness import free_port, wait_for_port


class RedisServer:
    """One redis-server process; C{kill} and C{start} again keep its port."""

    def __init__(self, directory: Path, *extra: str):
        self.extra = extra
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/test installs it)")
        self.binary = binary

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % (self.port,)

    def start(self) -> RedisServer:
        self._log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--protected-mode", "yes", *self.extra],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.directory,
        )
        wait_for_port(self.port, timeout=10, process=self.process)
        return self

    def command(self, *args: str) -> str:
        """One command through redis-cli (blocking: for set-up and checks, not the reactor)."""
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return result.stdout.strip()

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its connections but answers nothing (a slow or hung Redis)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Stop it at once (SIGKILL): an outage, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.send_signal(signal.SIGCONT)  # a paused process dies only once resumed
            self.process.wait(5)
        # Wait until the port is really free, so that start() can take it again.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    pass
            except OSError:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self.kill()
        if getattr(self, "_log", None):
            self._log.close()


class RedisSentinel:
    """One Sentinel (``redis-server --sentinel``) monitoring C{primary} as C{service}."""

    def __init__(self, directory: Path, primary: RedisServer, service: str = "mymaster"):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.service = service
        self.primary = primary
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "redis+sentinel://127.0.0.1:%d/%s/0" % (self.port, self.service)

    def start(self) -> RedisSentinel:
        config = self.directory / "sentinel.conf"
        config.write_text(
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor %s 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds %s 500\n"
            "sentinel failover-timeout %s 5000\n"
            % (self.port, self.directory, self.service, self.primary.port, self.service,
               self.service)
        )
        self._log = open(self.directory / "sentinel.log", "ab")
        self.process = subprocess.Popen(
            [self.primary.binary, str(config), "--sentinel"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.directory,
        )
        wait_for_port(self.port, timeout=10, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
