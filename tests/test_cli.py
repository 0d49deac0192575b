"""``twistgate`` and ``python -m twistgate``: check, token, --version (cli.py, __main__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jwt
import pytest

from twistgate import cli
from twistgate.config import SectionError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a-test-secret-that-is-long-enough-for-hs256"

GOOD = """\
[gateway]
listen = tcp:3000

[upstream:users]
targets = http://localhost:4000 http://localhost:4001
weights = 3 1
health_check = /health

[route:users]
prefix = /users
upstream = users
methods = GET POST

[route:orders]
prefix = /orders
upstream = http://localhost:5000
strip_prefix = yes
"""

BROKEN = """\
[gateway]
request_timeout = 5x

[upstream:users]
target = http://localhost:4000

[route:users]
prefix = /users
upstream = userz

[bogus]
"""


def run(*args):
    """Run ``python -m twistgate ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "twistgate", *args],
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_a_good_file_prints_ok_and_the_summary(tmp_path):
    path = tmp_path / "gw.ini"
    path.write_text(GOOD)
    result = run("check", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: OK"
    assert "  /users -> users  [route:users]" in lines
    assert "    methods: GET POST; strip_prefix: no; preserve_host: no" in lines
    assert "  /orders -> http://localhost:5000  [route:orders]" in lines
    assert "    http://localhost:4000 (weight 3)" in lines
    assert result.stderr == ""


def test_check_a_broken_file_prints_every_problem_and_exits_1(tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text(BROKEN)
    result = run("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: [gateway] request_timeout: '5x' is not a duration (use 250ms, 30s, 5m, 1h)",
        f"{path}: [upstream:users] targets: required",
        f"{path}: [upstream:users] target: unknown key (did you mean 'targets'?)",
        f"{path}: [route:users] upstream: no section [upstream:userz] (did you mean 'users'?)",
        f"{path}: [bogus]: unknown section",
    ]


def test_check_an_aggregate_with_broken_parts_is_one_line_each_and_exit_1(tmp_path):
    path = tmp_path / "gw.ini"
    path.write_text(GOOD + """
[aggregate:profile]
path = /profile/{id}
fetch.user = users /users/{id}?team={team.id}
fetch.team = users /teams/{user.team}
fetch.items = users /items/{oders.ids}
required = usr
""")
    result = run("check", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: [aggregate:profile] fetch.user: parts wait for each other's answers in a"
        " cycle: user -> team -> user",
        f"{path}: [aggregate:profile] fetch.items: {{oders.ids}}: no part 'oders' in this"
        " aggregate",
        f"{path}: [aggregate:profile] required: 'usr' is not a part of this aggregate"
        " (a fetch.NAME) (did you mean 'user'?)",
    ]


UNWISE = GOOD.replace("methods = GET POST", "methods = GET GTE FROB") + """
[filter:auth]
use = jwt
secret = only-20-bytes-long!!
algorithms = HS256
"""


def test_check_warns_of_a_short_secret_and_unregistered_methods_but_exits_0(tmp_path):
    path = tmp_path / "gw.ini"
    path.write_text(UNWISE)
    result = run("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{path}: OK"
    assert result.stderr.splitlines() == [
        f"{path}: [filter:auth] secret: warning: 20 bytes: RFC 7518 §3.2 asks for at least 32 "
        "with HS256 (as many as its hash output)",
        f"{path}: [route:users] methods: warning: 'FROB' is not a registered HTTP method",
        f"{path}: [route:users] methods: warning: 'GTE' is not a registered HTTP method "
        "(did you mean 'GET'?)",
    ]


def test_registered_methods_webdav_ones_included_get_no_warning(tmp_path):
    path = tmp_path / "gw.ini"
    methods = "GET HEAD POST PUT DELETE OPTIONS TRACE PATCH PROPFIND MKCOL COPY MOVE LOCK UNLOCK"
    path.write_text(GOOD.replace("methods = GET POST", "methods = " + methods))
    result = run("check", str(path))
    assert result.returncode == 0 and result.stderr == ""


def test_check_a_missing_file_is_one_line_not_a_traceback(tmp_path):
    path = tmp_path / "nope.ini"
    result = run("check", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"{path}: cannot read: No such file or directory"]


def test_no_arguments_prints_usage_and_exits_2():
    result = run()
    assert result.returncode == 2
    assert "usage: python -m twistgate" in result.stderr
    assert "check" in result.stderr and "token" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_prints_a_jwt_that_decodes():
    before = int(time.time())
    result = run(
        "token", "--secret", SECRET, "--sub", "alice", "--ttl", "5m", "--claim", "role=admin"
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert claims["sub"] == "alice"
    assert claims["role"] == "admin"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 300


def test_token_with_a_bad_ttl_is_one_line_and_exit_2():
    result = run("token", "--secret", SECRET, "--ttl", "5x")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "python -m twistgate token: --ttl: '5x' is not a duration (use 250ms, 30s, 5m, 1h)"
    ]


# -- the console script that pip installs ----------------------------------------------------------


def console_script() -> Path:
    """
    The ``twistgate`` script of setup.py's console_scripts: pip writes it beside the interpreter
    that runs the tests (``pip install -e .[test]`` in the test environment).
    """
    script = Path(sys.executable).parent / ("twistgate.exe" if os.name == "nt" else "twistgate")
    assert script.is_file(), f"no {script}: install the project first (pip install -e .[test])"
    return script


def run_script(*args, cwd=None):
    return subprocess.run([str(console_script()), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_the_console_script_and_python_m_print_the_same_version():
    from twistgate import __version__

    installed = run_script("--version")
    module = run("--version")
    assert installed.returncode == 0 and module.returncode == 0, installed.stderr + module.stderr
    assert installed.stdout == module.stdout == f"twistgate {__version__}\n"
    assert installed.stderr == module.stderr == ""


def test_the_console_script_checks_a_config_with_the_right_exit_status(tmp_path):
    good, broken = tmp_path / "gw.ini", tmp_path / "broken.ini"
    good.write_text(GOOD)
    broken.write_text(BROKEN)
    result = run_script("check", str(good), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{good}: OK"
    result = run_script("check", str(broken), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{broken}: [bogus]: unknown section" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_the_console_script_prints_a_token_and_names_itself_in_mistakes(tmp_path):
    result = run_script("token", "--secret", SECRET, "--sub", "alice", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])["sub"] == "alice"
    result = run_script("token", "--secret", SECRET, "--ttl", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["twistgate token: --ttl: '0' must be longer than 0"]
    result = run_script(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: twistgate ")


# -- in-process, for the details ------------------------------------------------------------------


def token_claims(capsys, *args):
    assert cli.main(["token", "--secret", SECRET, *args]) == 0
    out = capsys.readouterr().out.strip()
    return jwt.decode(out, SECRET, algorithms=["HS256"], options={"verify_aud": False})


def test_token_defaults_to_one_hour_and_no_subject(capsys):
    claims = token_claims(capsys)
    assert claims["exp"] - claims["iat"] == 3600
    assert "sub" not in claims


def test_token_claims_keep_json_ints_and_bools_else_strings(capsys):
    claims = token_claims(
        capsys,
        "--claim",
        "uid=42",
        "--claim",
        "admin=true",
        "--claim",
        "team=blue",
        "--claim",
        "ratio=0.5",
        "--claim",
        "empty=",
        "--claim",
        "eq=a=b",
    )
    assert claims["uid"] == 42
    assert claims["admin"] is True
    assert claims["team"] == "blue"
    assert claims["ratio"] == "0.5"
    assert claims["empty"] == ""
    assert claims["eq"] == "a=b"


def test_token_issuer_and_audience(capsys):
    claims = token_claims(capsys, "--issuer", "twistgate", "--audience", "api")
    assert claims["iss"] == "twistgate"
    assert claims["aud"] == "api"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ttl", "0"], "twistgate token: --ttl: '0' must be longer than 0"),
        (["--claim", "nokey"], "twistgate token: --claim: 'nokey' is not KEY=VALUE"),
        (["--claim", "=v"], "twistgate token: --claim: '=v' is not KEY=VALUE"),
    ],
)
def test_token_bad_arguments_are_one_line(capsys, args, message):
    assert cli.main(["token", "--secret", SECRET, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [message]


def test_token_short_secret_warning_is_one_line(capsys):
    """PyJWT (2.10+) warns about short HMAC keys: one plain line, no source location."""
    assert cli.main(["token", "--secret", "short"]) == 0
    captured = capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert jwt.decode(captured.out.strip(), "short", algorithms=["HS256"])
    assert ".py:" not in captured.err
    for line in captured.err.splitlines():
        assert line.startswith("twistgate token: warning: ")


def test_token_needs_a_secret(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["token"])
    assert raised.value.code == 2
    assert "--secret" in capsys.readouterr().err


def test_check_uses_the_installed_filter_factories(tmp_path, capsys, monkeypatch):
    def validate(section):
        if "rate" not in section:
            raise SectionError([("rate", "required")])
        return dict(section)

    monkeypatch.setattr(cli, "installed_filter_factories", lambda: {"ratelimit": validate})
    path = tmp_path / "gw.ini"
    path.write_text(GOOD + "filters = limit\n[filter:limit]\nuse = ratelimit\nrate = 10/s\n")
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  limit: ratelimit" in out
    assert "    chain: limit" in out

    path.write_text(GOOD + "[filter:limit]\nuse = ratelimit\n")
    assert cli.main(["check", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"{path}: [filter:limit] rate: required"]


def test_installed_filter_factories_is_a_mapping_of_validators():
    factories = cli.installed_filter_factories()
    assert all(callable(validate) for validate in factories.values())
