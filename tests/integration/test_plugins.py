"""A third-party filter plugin, loaded from a directory on sys.path, acting end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest_twisted
import treq

from tests.integration.harness import ROOT, Gateway, environment, twistd_command

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


def broken_plugin_directory(tmp_path):
    """A directory with twistgate/plugins/broken_thing.py, which imports a missing module."""
    root = tmp_path / "broken"
    (root / "twistgate" / "plugins").mkdir(parents=True)
    (root / "twistgate" / "plugins" / "broken_thing.py").write_text(
        "import no_such_module_anywhere\n"
    )
    return root


BROKEN_LINE = (
    "{config}: [filter:x] use: the plugin module 'twistgate.plugins.broken_thing' failed to "
    "import: ModuleNotFoundError: No module named 'no_such_module_anywhere'"
)


def test_check_names_a_plugin_module_that_failed_to_import(tmp_path):
    site = broken_plugin_directory(tmp_path)
    config = tmp_path / "gw.ini"
    config.write_text("[filter:x]\nuse = thing\n")
    result = subprocess.run([sys.executable, "-m", "twistgate", "check", str(config)],
                            capture_output=True, text=True, env=environment(site), cwd=ROOT)
    assert result.returncode == 1
    # (before them, twisted.plugin's own "Unhandled Error" traceback of the failed import)
    problems = [line for line in result.stderr.splitlines() if line.startswith(f"{config}: ")]
    assert problems == [
        f"{config}: [filter:x] use: unknown filter 'thing'",
        BROKEN_LINE.format(config=config),
    ]


def test_start_up_names_a_plugin_module_that_failed_to_import(tmp_path):
    site = broken_plugin_directory(tmp_path)
    config = tmp_path / "gw.ini"
    config.write_text(
        "[gateway]\nlisten = tcp:0\n[filter:x]\nuse = thing\n"
        "[route:a]\nprefix = /\nupstream = http://127.0.0.1:1\nfilters = x\n"
    )
    result = subprocess.run(twistd_command(config), capture_output=True, text=True,
                            env=environment(site), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    unknown = lines.index(f"{config}: [filter:x] use: unknown filter 'thing'")
    assert lines[unknown + 1] == BROKEN_LINE.format(config=config)
