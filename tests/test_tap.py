"""What twistd calls: options, config errors, and the service tree."""

from __future__ import annotations

import pytest
from twisted.application.internet import StreamServerEndpointService

from twistgate import tap
from twistgate.upstream.health import HealthChecker


def write(tmp_path, text):
    path = tmp_path / "gw.ini"
    path.write_text(text)
    return str(path)


def services(top):
    for child in top:
        yield child
        if hasattr(child, "__iter__"):
            yield from services(child)


def test_a_valid_config_makes_listeners_and_health_checkers(tmp_path):
    path = write(
        tmp_path,
        "[gateway]\nlisten = tcp:0:interface=127.0.0.1 tcp:0:interface=127.0.0.2\n"
        "[upstream:u]\ntargets = http://127.0.0.1:1\nhealth_check = /health\n"
        "[route:u]\nprefix = /u\nupstream = u\n",
    )
    options = tap.Options()
    options.parseOptions(["--config", path])
    top = tap.makeService(options)
    kinds = [type(s) for s in services(top)]
    assert kinds.count(StreamServerEndpointService) == 2
    assert kinds.count(HealthChecker) == 1


def test_demo_adds_the_example_services(tmp_path):
    path = write(tmp_path, "[route:u]\nprefix = /u\nupstream = http://127.0.0.1:1\n")
    plain, demo = tap.Options(), tap.Options()
    plain.parseOptions(["--config", path])
    demo.parseOptions(["--config", path, "--demo"])
    count = [
        sum(isinstance(s, StreamServerEndpointService) for s in services(tap.makeService(o)))
        for o in (plain, demo)
    ]
    assert count == [1, 4]


def test_a_broken_config_prints_its_problems_and_exits_1(tmp_path, capsys):
    path = write(tmp_path, "[route:u]\nprefix = /u\nupstream = nowhere\n")
    with pytest.raises(SystemExit) as exited:
        tap.Options().parseOptions(["--config", path])
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"{path}: [route:u] upstream: no section [upstream:nowhere]\n"


def test_config_warnings_are_logged_at_start_up_and_on_every_reload(tmp_path):
    from twisted.logger import capturedLogs

    path = write(tmp_path, "[gateway]\nlisten = tcp:0\n"
                           "[route:u]\nprefix = /u\nupstream = http://127.0.0.1:1\nmethods = GTE\n")
    warning = (f"{path}: [route:u] methods: warning: 'GTE' is not a registered HTTP method "
               "(did you mean 'GET'?)")
    options = tap.Options()
    with capturedLogs() as events:
        options.parseOptions(["--config", path])  # start-up
        options.load_config()  # what a reload calls
    logged = [event["warning"] for event in events if event.get("log_level").name == "warn"]
    assert logged == [warning, warning]


def test_one_worker_runs_the_gateway_in_the_twistd_process(tmp_path):
    from twistgate.gateway import Gateway

    path = write(tmp_path, "[gateway]\nlisten = tcp:0:interface=127.0.0.1\nworkers = 1\n"
                           "[route:u]\nprefix = /u\nupstream = http://127.0.0.1:1\n")
    options = tap.Options()
    options.parseOptions(["--config", path])
    assert [type(s) for s in tap.makeService(options)] == [Gateway]


def test_more_workers_run_a_parent_that_binds_nothing_until_it_starts(tmp_path):
    from twistgate.workers.parent import Supervisor

    path = write(tmp_path, "[gateway]\nlisten = tcp:0:interface=127.0.0.1\nworkers = 2\n"
                           "[route:u]\nprefix = /u\nupstream = http://127.0.0.1:1\n")
    options = tap.Options()
    options.parseOptions(["--config", path])
    (supervisor,) = tap.makeService(options)
    assert isinstance(supervisor, Supervisor)
    assert supervisor.count == 2 and supervisor.sockets.ports == {}
