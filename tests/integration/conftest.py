"""Fixtures for integration tests: recording upstream servers and real twistd gateways."""

from __future__ import annotations

import pytest

from tests.integration.harness import Gateway, Upstream, serve


@pytest.fixture
def upstreams():
    """C{upstreams(name)} starts a recording L{Upstream} on a free port; all stop at teardown."""
    started = []

    def start(name):
        resource = Upstream(name)
        site, port = serve(resource)
        started.append(port)
        resource.site = site
        resource.url = "http://127.0.0.1:%d" % port.getHost().port
        return resource

    yield start
    for port in started:
        port.stopListening()


@pytest.fixture
def gateway(tmp_path):
    """C{gateway(ini)} starts `twistd twistgate` on that gw.ini ({port} is filled in)."""
    running = []

    def start(ini):
        gw = Gateway(tmp_path, ini).start()
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()
