"""A third-party filter plugin, loaded from a directory on sys.path, acting end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest_twisted
import treq

from tests.integration.harness import ROOT, Gateway, environment

EXAMPLE = ROOT / "examples" / "plugins" / "twistgate" / "plugins" / "static_headers.py"


def plugin_directory(tmp_path):
    """A directory with twistgate/plugins/static_headers.py and no __init__.py, like a wheel."""
    root = tmp_path / "site"
    (root / "twistgate" / "plugins").mkdir(parents=True)
    shutil.copy(EXAMPLE, root / "twistgate" / "plugins" / "static_headers.py")
    return root


@pytest_twisted.inlineCallbacks
def test_a_plugin_from_another_directory_acts_on_requests_and_answers(tmp_path, upstreams):
    site = plugin_directory(tmp_path)
    app = upstreams("app")
    gw = Gateway(
        tmp_path,
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        filters = tag
        [filter:tag]
        use = static_headers
        request = X-Gateway: twistgate
        response = X-Served-By: example-plugin
        [route:app]
        prefix = /
        upstream = {app.url}
        """,
        python_path=(site,),
    ).start()
    try:
        response = yield treq.get(gw.url("/hello"), headers={"X-Gateway": "spoofed"})
        body = yield response.json()
    finally:
        gw.stop()
    assert response.code == 200
    assert response.headers.getRawHeaders(b"x-served-by") == [b"example-plugin"]
    assert body["headers"]["x-gateway"] == ["twistgate"]


def test_check_finds_the_plugin_and_reports_its_problems(tmp_path):
    site = plugin_directory(tmp_path)
    config = tmp_path / "gw.ini"
    config.write_text("[filter:tag]\nuse = static_headers\nrequest = nonsense\ncolour = red\n")
    command = [sys.executable, "-m", "twistgate", "check", str(config)]
    without = subprocess.run(command, capture_output=True, text=True, env=environment(), cwd=ROOT)
    assert without.returncode == 1
    assert "use: unknown filter 'static_headers'" in without.stderr
    found = subprocess.run(command, capture_output=True, text=True, env=environment(site),
                           cwd=ROOT)
    assert found.returncode == 1
    assert sorted(found.stderr.splitlines()) == [
        f"{config}: [filter:tag] colour: unknown key",
        f"{config}: [filter:tag] request: expected 'Name: value', got 'nonsense'",
    ]
