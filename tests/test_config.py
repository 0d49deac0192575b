"""gw.ini -> frozen config objects: every section, key, default and one-line problem."""

from __future__ import annotations

import ipaddress
import os
import textwrap
import types

import attrs
import pytest

from twistgate.config import (
    AggregateConfig,
    ConfigError,
    Fetch,
    FilterConfig,
    GatewayConfig,
    GatewaySettings,
    RouteConfig,
    SectionError,
    StatusSettings,
    StoreSettings,
    Target,
    UpstreamConfig,
    format_summary,
    load_config,
    parse_config,
)
from twistgate.stores.address import RedisAddress


def fake_jwt(section):
    """A filter factory as the filters package provides them: settings, or SectionError."""
    problems = []
    if "secret" not in section:
        problems.append(("secret", "required"))
    if section.get("algorithms") == "none":
        problems.append(("algorithms", "'none' is never accepted"))
    if problems:
        raise SectionError(problems)
    return ("jwt-settings", dict(section))


FACTORIES = {"jwt": fake_jwt, "ratelimit": lambda section: ("limit-settings", dict(section))}

UPSTREAM = """
[upstream:users]
targets = http://localhost:4000
"""


def parse(text, environ=None, factories=None, base_dir=None, path="gw.ini"):
    return parse_config(
        textwrap.dedent(text),
        path=path,
        environ={} if environ is None else environ,
        filter_factories=FACTORIES if factories is None else factories,
        base_dir=base_dir,
    )


def problems(text, **kwargs):
    with pytest.raises(ConfigError) as raised:
        parse(text, **kwargs)
    assert str(raised.value) == "\n".join(raised.value.problems)
    return raised.value.problems


# -- defaults --------------------------------------------------------------------------------------


def test_empty_file_is_a_valid_config_with_every_default():
    config = parse("")
    assert config.path == "gw.ini"
    assert config.gateway == GatewaySettings(
        listen=("tcp:3000",),
        env_file=None,
        filters=(),
        trusted_proxies=(),
        request_timeout=30.0,
        connect_timeout=5.0,
        max_body=10 * 1024 * 1024,
        drain_timeout=10.0,
        header_timeout=10.0,
        idle_timeout=60.0,
        access_log="-",
        workers=1,
    )
    assert config.status is None
    assert config.store == StoreSettings(backend="memory", url=None)
    assert dict(config.upstreams) == {}
    assert config.routes == ()
    assert dict(config.filters) == {}
    assert config.aggregates == ()


def test_comments_inline_comments_and_multiline_lists():
    config = parse(
        """
        # a comment
        ; another
        [upstream:users]   ; inline after a header
        targets = http://a:1   ; inline comment
            http://b:2
        weights = 1 # one
            3
        """
    )
    upstream = config.upstreams["users"]
    assert [t.url for t in upstream.targets] == ["http://a:1", "http://b:2"]
    assert upstream.weights == (1, 3)


# -- [gateway] -------------------------------------------------------------------------------------


def test_gateway_keys_are_parsed(tmp_path):
    (tmp_path / "logs").mkdir()
    config = parse(
        """
        [gateway]
        listen = tcp:3000:interface=127.0.0.1 ssl:3443:privateKey=key.pem unix:/run/gw.sock
            tcp6:port=8080 systemd:domain=INET:index=0
        filters = auth
        trusted_proxies = 10.0.0.0/8 127.0.0.1 ::1 fd00::/8
        request_timeout = 2s
        connect_timeout = 250ms
        max_body = 1MB
        drain_timeout = 0
        header_timeout = 5s
        idle_timeout = 2m
        access_log = logs/access.log
        workers = 1

        [filter:auth]
        use = jwt
        secret = s
        """,
        base_dir=str(tmp_path),
    )
    gw = config.gateway
    assert gw.listen == (
        "tcp:3000:interface=127.0.0.1",
        "ssl:3443:privateKey=key.pem",
        "unix:/run/gw.sock",
        "tcp6:port=8080",
        "systemd:domain=INET:index=0",
    )
    assert gw.filters == ("auth",)
    assert gw.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert (gw.request_timeout, gw.connect_timeout, gw.drain_timeout) == (2.0, 0.25, 0.0)
    assert (gw.header_timeout, gw.idle_timeout) == (5.0, 120.0)
    assert gw.max_body == 1024 * 1024
    assert gw.workers == 1


def test_access_log_path_is_relative_to_the_config_directory(tmp_path):
    (tmp_path / "logs").mkdir()
    config = parse("[gateway]\naccess_log = logs/access.log\n", base_dir=str(tmp_path))
    assert config.gateway.access_log == str(tmp_path / "logs" / "access.log")
    assert parse("[gateway]\naccess_log = off\n").gateway.access_log == "off"
    assert problems("[gateway]\naccess_log = /nonexistent-dir/x.log\n") == [
        "gw.ini: [gateway] access_log: directory '/nonexistent-dir' does not exist"
    ]


def test_workers_is_a_count_or_auto():
    assert parse("[gateway]\nworkers = 4\n").gateway.workers == 4
    assert parse("[gateway]\nworkers = 1\n").gateway.workers == 1
    assert parse("[gateway]\nworkers = auto\n").gateway.workers == (os.cpu_count() or 1)


def test_workers_below_one_or_not_a_number_is_refused():
    assert problems("[gateway]\nworkers = 0\n") == ["gw.ini: [gateway] workers: must be at least 1"]
    assert problems("[gateway]\nworkers = -1\n") == [
        "gw.ini: [gateway] workers: '-1' is not a whole number (1 or more) or 'auto'"
    ]
    assert problems("[gateway]\nworkers = many\n") == [
        "gw.ini: [gateway] workers: 'many' is not a whole number (1 or more) or 'auto'"
    ]


def test_bad_duration_is_one_exact_line():
    assert problems("[gateway]\nrequest_timeout = 5x\n") == [
        "gw.ini: [gateway] request_timeout: '5x' is not a duration (use 250ms, 30s, 5m, 1h)"
    ]


def test_timeouts_must_be_longer_than_zero():
    assert problems("[gateway]\nrequest_timeout = 0\n") == [
        "gw.ini: [gateway] request_timeout: '0' must be longer than 0"
    ]


def test_bad_size_and_bad_proxies():
    assert problems(
        """
        [gateway]
        max_body = lots
        trusted_proxies = 10.0.0.1/8 proxy.local
        """
    ) == [
        "gw.ini: [gateway] max_body: 'lots' is not a size"
        " (use 512KB, 10MB, 1GB or a number of bytes)",
        "gw.ini: [gateway] trusted_proxies: '10.0.0.1/8' has host bits set"
        " (did you mean 10.0.0.0/8?)",
        "gw.ini: [gateway] trusted_proxies: 'proxy.local' is not an IP address or network",
    ]


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("3000", "'3000' is not a Twisted endpoint"),
        ("http:3000", "'http:3000' is not a Twisted endpoint"),
        ("tcp:99999", "'tcp:99999' needs a port number 0-65535 after 'tcp:'"),
        ("tcp:port", "'tcp:port' needs a port number 0-65535 after 'tcp:'"),
        ("ssl:privateKey=k.pem", "needs a port number"),
        ("unix:", "'unix:' needs a socket path after 'unix:'"),
    ],
)
def test_listen_endpoints_are_checked(endpoint, problem):
    [line] = problems(f"[gateway]\nlisten = {endpoint}\n")
    assert line.startswith("gw.ini: [gateway] listen: ")
    assert problem in line


def test_listen_endpoint_listed_twice():
    assert problems("[gateway]\nlisten = tcp:3000 tcp:3000\n") == [
        "gw.ini: [gateway] listen: 'tcp:3000' is listed twice"
    ]


def test_gateway_filters_must_name_filter_sections():
    assert problems("[gateway]\nfilters = auth\n") == [
        "gw.ini: [gateway] filters: no section [filter:auth]"
    ]


# -- [status] and [store] --------------------------------------------------------------------------


def test_status_section():
    config = parse("[status]\nlisten = tcp:3001:interface=127.0.0.1\n")
    assert config.status == StatusSettings(listen=("tcp:3001:interface=127.0.0.1",))
    assert problems("[status]\n") == ["gw.ini: [status] listen: required"]
    assert problems("[gateway]\nlisten = tcp:3000\n[status]\nlisten = tcp:3000\n") == [
        "gw.ini: [status] listen: 'tcp:3000' is also a [gateway] listen endpoint"
    ]


def test_store_section():
    assert parse("[store]\n").store == StoreSettings(backend="memory", url=None)
    config = parse("[store]\nbackend = redis\nurl = redis://127.0.0.1:6379/0\n")
    assert config.store == StoreSettings(
        backend="redis",
        url="redis://127.0.0.1:6379/0",
        address=RedisAddress("redis", host="127.0.0.1", port=6379, db=0),
        store_timeout=0.05,
        nodes=None,
    )
    assert problems("[store]\nbackend = redis\n") == ["gw.ini: [store] url: required"]
    assert problems("[store]\nbackend = redis\nurl = http://x/\n") == [
        "gw.ini: [store] url: 'http://x/' is not a redis URL (use redis://host:6379/0)"
    ]
    assert problems("[store]\nbackend = rediss\n") == [
        "gw.ini: [store] backend: 'rediss' is not one of memory, redis (did you mean 'redis'?)"
    ]


def test_store_redis_timeout_and_nodes():
    config = parse(
        "[store]\nbackend = redis\nurl = redis://:s3cret@redis.internal:6380/2\n"
        "store_timeout = 20ms\nnodes = 3\n"
    )
    store = config.store
    assert store.store_timeout == pytest.approx(0.02)
    assert store.nodes == 3
    assert store.address == RedisAddress(
        "redis", host="redis.internal", port=6380, db=2, password="s3cret"
    )
    # An address is logged: its password never is.
    assert "s3cret" not in repr(store.address) and "s3cret" not in str(store.address)
    assert str(store.address) == "redis://redis.internal:6380/2"
    assert parse("[store]\nbackend = redis\nurl = unix:///run/r.sock?db=1\n").store.address == (
        RedisAddress("unix", path="/run/r.sock", db=1)
    )
    sentinel = parse(
        "[store]\nbackend = redis\nurl = redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/main/3\n"
    ).store.address
    assert sentinel == RedisAddress(
        "redis+sentinel", db=3, password="pw",
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379)), service="main",
    )
    assert str(sentinel) == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main/3"


def test_store_problems_are_one_line_each():
    assert problems(
        "[store]\nbackend = redis\nurl = redis://h/x\nstore_timeout = 50\nnodes = 0\n"
    ) == [
        "gw.ini: [store] url: 'redis://h/x': the database 'x' is not a number "
        "(use redis://host:6379/0)",
        "gw.ini: [store] store_timeout: '50' is not a duration (use 250ms, 30s, 5m, 1h)",
        "gw.ini: [store] nodes: '0' is not a whole number of 1 or more",
    ]
    assert problems("[store]\nbackend = redis\nurl = redis://h\nstore_timeout = 0\n") == [
        "gw.ini: [store] store_timeout: '0' must be longer than 0"
    ]
    assert problems("[store]\nbackend = redis\nurl = redis+sentinel://s1:26379\n") == [
        "gw.ini: [store] url: 'redis+sentinel://s1:26379' names no primary "
        "(use redis+sentinel://host:26379,host2:26379/mymaster/0)"
    ]
    assert problems("[store]\nbackend = redis\nurl = redis+sentinel://s1:x/m\n") == [
        "gw.ini: [store] url: 'redis+sentinel://s1:x/m': 's1:x' is not a Sentinel host:port "
        "(use redis+sentinel://host:26379,host2:26379/mymaster/0)"
    ]
    assert problems("[store]\nbackend = redis\nurl = redis://h\nnode = 3\n") == [
        "gw.ini: [store] node: unknown key (did you mean 'nodes'?)"
    ]


# -- [upstream:NAME] -------------------------------------------------------------------------------


def test_upstream_defaults():
    upstream = parse(UPSTREAM).upstreams["users"]
    assert upstream == UpstreamConfig(
        name="users",
        targets=(Target("http://localhost:4000", "http", "localhost", 4000, ""),),
        weights=(1,),
        balance="round_robin",
        health_check=None,
        health_interval=5.0,
        max_fails=3,
        fail_timeout=10.0,
        retries=1,
        keepalive=1024,
        keepalive_timeout=60.0,
        tls_verify=True,
        ca_file=None,
        client_cert=None,
        client_key=None,
    )


def test_upstream_keys_are_parsed(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    upstream = parse(
        """
        [upstream:users]
        targets = https://API.example.com http://10.0.0.7:8080/v1/ http://[::1]:9000
        weights = 3 1 2
        balance = least_conn
        health_check = /health?deep=1
        health_interval = 2s
        max_fails = 0
        fail_timeout = 1m
        retries = 0
        keepalive = 0
        keepalive_timeout = 5s
        tls_verify = no
        ca_file = ca.pem
        client_cert = cert.pem
        client_key = key.pem
        """,
        base_dir=str(tmp_path),
    ).upstreams["users"]
    assert upstream.targets == (
        Target("https://api.example.com:443", "https", "api.example.com", 443, ""),
        Target("http://10.0.0.7:8080/v1", "http", "10.0.0.7", 8080, "/v1"),
        Target("http://[::1]:9000", "http", "::1", 9000, ""),
    )
    assert upstream.weights == (3, 1, 2)
    assert upstream.balance == "least_conn"
    assert upstream.health_check == "/health?deep=1"
    assert (upstream.health_interval, upstream.max_fails, upstream.fail_timeout) == (2.0, 0, 60.0)
    assert (upstream.retries, upstream.tls_verify) == (0, False)
    assert (upstream.keepalive, upstream.keepalive_timeout) == (0, 5.0)
    assert upstream.ca_file == str(tmp_path / "ca.pem")
    assert upstream.client_cert == str(tmp_path / "cert.pem")
    assert upstream.client_key == str(tmp_path / "key.pem")


def test_keepalive_is_a_count_and_keepalive_timeout_a_positive_duration():
    found = problems(UPSTREAM + "keepalive = many\nkeepalive_timeout = 0s\n")
    assert len(found) == 2
    assert found[0].startswith("gw.ini: [upstream:users] keepalive: ")
    assert found[1].startswith("gw.ini: [upstream:users] keepalive_timeout: ")


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random", "ip_hash"])
def test_every_balance_method(balance):
    assert parse(UPSTREAM + f"balance = {balance}\n").upstreams["users"].balance == balance


def test_unknown_key_with_did_you_mean_is_one_exact_line():
    assert problems("[upstream:users]\ntarget = http://localhost:4000\n") == [
        "gw.ini: [upstream:users] targets: required",
        "gw.ini: [upstream:users] target: unknown key (did you mean 'targets'?)",
    ]
    assert problems(UPSTREAM + "colour = blue\n") == [
        "gw.ini: [upstream:users] colour: unknown key"
    ]


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://x", "'ftp://x' is not an http:// or https:// URL"),
        ("localhost:4000", "'localhost:4000' is not an http:// or https:// URL"),
        ("http://", "'http://' has no host"),
        ("http://u:p@host", "'http://u:p@host' must not contain a user name or password"),
        ("http://host/?a=1", "'http://host/?a=1' must not have a query ('?...')"),
        ("http://host/#top", "'http://host/#top' must not have a fragment ('#...')"),
        ("http://host:http", "'http://host:http' has a bad port or host"),
        ("http://host:70000", "'http://host:70000' has a bad port or host"),
        ("http://ho$t", "'http://ho$t' has a bad host"),
    ],
)
def test_bad_target_urls(url, problem):
    assert problems(f"[upstream:users]\ntargets = {url}\n") == [
        f"gw.ini: [upstream:users] targets: {problem}"
    ]


def test_weights_must_match_targets_and_be_at_least_one():
    text = "[upstream:users]\ntargets = http://a http://b\n"
    assert problems(text + "weights = 1 2 3\n") == [
        "gw.ini: [upstream:users] weights: 3 weights for 2 targets (give one per target)"
    ]
    assert problems(text + "weights = 1 0\n") == [
        "gw.ini: [upstream:users] weights: each weight must be at least 1"
    ]
    assert problems(text + "weights = 1 x\n") == [
        "gw.ini: [upstream:users] weights: 'x' is not a whole number (0 or more)"
    ]


def test_upstream_value_problems():
    assert problems(
        UPSTREAM
        + textwrap.dedent(
            """
        balance = roundrobin
        health_check = health
        health_interval = 0
        max_fails = three
        tls_verify = perhaps
        ca_file = missing.pem
        client_key = missing-key.pem
        """
        )
    ) == [
        # A missing key's problem sorts at its section's header.
        "gw.ini: [upstream:users] client_cert: required with client_key",
        "gw.ini: [upstream:users] balance: 'roundrobin' is not one of round_robin, least_conn,"
        " random, ip_hash (did you mean 'round_robin'?)",
        "gw.ini: [upstream:users] health_check: 'health' must be a path starting with '/'",
        "gw.ini: [upstream:users] health_interval: '0' must be longer than 0",
        "gw.ini: [upstream:users] max_fails: 'three' is not a whole number (0 or more)",
        "gw.ini: [upstream:users] tls_verify: 'perhaps' is not a yes/no value"
        " (use yes or no; true/false, on/off and 1/0 work too)",
        "gw.ini: [upstream:users] ca_file: cannot read 'missing.pem': No such file or directory",
        "gw.ini: [upstream:users] client_key: cannot read 'missing-key.pem':"
        " No such file or directory",
    ]


def test_client_cert_and_key_go_together(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    assert problems(UPSTREAM + "client_cert = cert.pem\n", base_dir=str(tmp_path)) == [
        "gw.ini: [upstream:users] client_key: required with client_cert"
    ]


def test_a_target_listed_twice():
    assert problems("[upstream:u]\ntargets = http://a:80 http://a\n") == [
        "gw.ini: [upstream:u] targets: 'http://a:80' is listed twice"
        " (give it a larger weight instead)"
    ]


def test_an_upstream_nothing_refers_to_is_fine():
    assert list(parse(UPSTREAM).upstreams) == ["users"]


# -- [route:NAME] ----------------------------------------------------------------------------------


def test_route_defaults():
    config = parse(UPSTREAM + "[route:users]\nprefix = /users\nupstream = users\n")
    assert config.routes == (
        RouteConfig(
            name="users",
            prefix="/users",
            upstream="users",
            methods=None,
            strip_prefix=False,
            preserve_host=False,
            filters=(),
            public=False,
        ),
    )


def test_route_keys_are_parsed():
    config = parse(
        UPSTREAM
        + textwrap.dedent(
            """
        [route:users]
        prefix = /users/
        upstream = users
        methods = get POST  M-SEARCH
        strip_prefix = yes
        preserve_host = on
        filters = cache
        public = true

        [filter:cache]
        use = ratelimit
        """
        )
    )
    [route] = config.routes
    assert route.prefix == "/users"
    assert route.methods == frozenset({"GET", "POST", "M-SEARCH"})
    assert (route.strip_prefix, route.preserve_host, route.public) == (True, True, True)
    assert route.filters == ("cache",)


def test_routes_keep_file_order_and_root_prefix_stays_slash():
    config = parse(
        UPSTREAM
        + textwrap.dedent(
            """
        [route:b]
        prefix = /b
        upstream = users
        [route:root]
        prefix = /
        upstream = users
        [route:a]
        prefix = /a/b/
        upstream = users
        """
        )
    )
    assert [(r.name, r.prefix) for r in config.routes] == [
        ("b", "/b"),
        ("root", "/"),
        ("a", "/a/b"),
    ]


def test_missing_required_keys_are_one_exact_line_each():
    assert problems("[route:a]\n") == [
        "gw.ini: [route:a] prefix: required",
        "gw.ini: [route:a] upstream: required",
    ]
    assert problems("[route:a]\nprefix =\nupstream = http://x\n") == [
        "gw.ini: [route:a] prefix: required"
    ]


def test_missing_upstream_reference_is_one_exact_line():
    assert problems(UPSTREAM + "[route:users]\nprefix = /users\nupstream = userz\n") == [
        "gw.ini: [route:users] upstream: no section [upstream:userz] (did you mean 'users'?)"
    ]
    assert problems("[route:users]\nprefix = /users\nupstream = accounts\n") == [
        "gw.ini: [route:users] upstream: no section [upstream:accounts]"
    ]


def test_an_upstream_section_later_in_the_file_is_found():
    config = parse("[route:users]\nprefix = /users\nupstream = users\n" + UPSTREAM)
    assert config.routes[0].upstream == "users"


@pytest.mark.parametrize(
    "prefix, problem",
    [
        ("users", "'users' must start with '/'"),
        ("/a?b=1", "'/a?b=1' must be a path, without '?' or '#'"),
        ("/a#b", "'/a#b' must be a path, without '?' or '#'"),
        ("/a/../b", "'/a/../b' must not contain '.' or '..' segments"),
        ("/a/./b", "'/a/./b' must not contain '.' or '..' segments"),
        ("/a/%2E%2e", "'/a/%2E%2e' must not contain '.' or '..' segments"),
        ("/..", "'/..' must not contain '.' or '..' segments"),
        ("/a//b", "'/a//b' must not contain empty segments ('//')"),
    ],
)
def test_bad_prefixes(prefix, problem):
    assert problems(f"[route:a]\nprefix = {prefix}\nupstream = http://x\n") == [
        f"gw.ini: [route:a] prefix: {problem}"
    ]


def test_dotted_names_that_are_not_dot_segments_are_fine():
    config = parse("[route:a]\nprefix = /v1.2/.well-known\nupstream = http://x\n")
    assert config.routes[0].prefix == "/v1.2/.well-known"


def test_duplicate_prefix_is_reported_on_the_second_route():
    text = UPSTREAM + "[route:users]\nprefix = /users\nupstream = users\n"
    assert problems(text + "[route:again]\nprefix = /users/\nupstream = users\n") == [
        "gw.ini: [route:again] prefix: '/users' is already the prefix of [route:users]"
    ]


def test_methods_must_be_tokens():
    assert problems("[route:a]\nprefix = /a\nupstream = http://x\nmethods = GET, POST\n") == [
        "gw.ini: [route:a] methods: 'GET,' is not an HTTP method (lists are separated by spaces)"
    ]
    assert problems("[route:a]\nprefix = /a\nupstream = http://x\nmethods = GET P(ST\n") == [
        "gw.ini: [route:a] methods: 'P(ST' is not an HTTP method"
    ]


def test_route_booleans_are_checked():
    assert problems("[route:a]\nprefix = /a\nupstream = http://x\nstrip_prefix = si\n") == [
        "gw.ini: [route:a] strip_prefix: 'si' is not a yes/no value"
        " (use yes or no; true/false, on/off and 1/0 work too)"
    ]


def test_url_upstream_makes_one_implicit_upstream_shared_by_routes():
    config = parse(
        """
        [route:a]
        prefix = /a
        upstream = http://Localhost:4000/
        [route:b]
        prefix = /b
        upstream = http://localhost:4000
        [route:c]
        prefix = /c
        upstream = https://secure.example/api
        """
    )
    assert [r.upstream for r in config.routes] == [
        "http://localhost:4000",
        "http://localhost:4000",
        "https://secure.example:443/api",
    ]
    assert list(config.upstreams) == ["http://localhost:4000", "https://secure.example:443/api"]
    implicit = config.upstreams["http://localhost:4000"]
    assert implicit == UpstreamConfig(
        name="http://localhost:4000",
        targets=(Target("http://localhost:4000", "http", "localhost", 4000, ""),),
        weights=(1,),
    )
    assert implicit.balance == "round_robin" and implicit.max_fails == 3
    assert config.upstreams["https://secure.example:443/api"].targets[0].base_path == "/api"


def test_bad_url_upstream_is_reported():
    assert problems("[route:a]\nprefix = /a\nupstream = ftp://files\n") == [
        "gw.ini: [route:a] upstream: 'ftp://files' is not an http:// or https:// URL"
    ]


def test_route_filters_must_exist_once_and_not_repeat_the_global_chain():
    assert problems("[route:a]\nprefix = /a\nupstream = http://x\nfilters = auth\n") == [
        "gw.ini: [route:a] filters: no section [filter:auth]"
    ]
    text = """
        [gateway]
        filters = auth
        [filter:auth]
        use = jwt
        secret = s
        [filter:limit]
        use = ratelimit
        [route:a]
        prefix = /a
        upstream = http://x
        filters = limit limit auth
        """
    assert problems(text) == [
        "gw.ini: [route:a] filters: 'limit' is listed twice",
        "gw.ini: [route:a] filters: 'auth' is already in [gateway] filters,"
        " which run on every route",
    ]


# -- [filter:NAME] ---------------------------------------------------------------------------------


def test_filter_section_goes_through_its_factory():
    config = parse(
        """
        [filter:auth]
        use = jwt
        secret = ${SECRET}
        algorithms = HS256
        issuer =
        """,
        environ={"SECRET": "hush"},
    )
    assert dict(config.filters) == {
        "auth": FilterConfig(
            name="auth",
            use="jwt",
            settings=("jwt-settings", {"secret": "hush", "algorithms": "HS256", "issuer": ""}),
        )
    }


def test_filter_use_is_required_and_must_be_known():
    assert problems("[filter:auth]\nsecret = s\n") == ["gw.ini: [filter:auth] use: required"]
    assert problems("[filter:auth]\nuse = jwk\n") == [
        "gw.ini: [filter:auth] use: unknown filter 'jwk' (did you mean 'jwt'?)"
    ]
    assert problems("[filter:auth]\nuse = jwt\n", factories={}) == [
        "gw.ini: [filter:auth] use: unknown filter 'jwt'"
    ]


def test_section_error_from_a_factory_names_each_key():
    assert problems("[filter:auth]\nuse = jwt\nalgorithms = none\n") == [
        "gw.ini: [filter:auth] secret: required",
        "gw.ini: [filter:auth] algorithms: 'none' is never accepted",
    ]


def test_an_unset_variable_in_a_filter_is_reported_once():
    assert problems("[filter:auth]\nuse = jwt\nsecret = ${JWT_SECRET}\n") == [
        "gw.ini: [filter:auth] secret: ${JWT_SECRET} is not set"
    ]


def test_filter_factories_default_to_none_known():
    with pytest.raises(ConfigError) as raised:
        parse_config("[filter:auth]\nuse = jwt\n", environ={})
    assert raised.value.problems == ["gw.ini: [filter:auth] use: unknown filter 'jwt'"]


# -- [aggregate:NAME] ------------------------------------------------------------------------------


def test_aggregate_section():
    config = parse(
        UPSTREAM
        + textwrap.dedent(
            """
        [upstream:orders]
        targets = http://localhost:5000
        [filter:auth]
        use = jwt
        secret = s
        [aggregate:profile]
        path = /profile/{id}
        filters = auth
        fetch.user = users /users/{id}
        fetch.orders = orders /orders?user={id}
        fetch.status = http://status:9000 /ping
        timeout = 2s
        """
        )
    )
    assert config.aggregates == (
        AggregateConfig(
            name="profile",
            path="/profile/{id}",
            filters=("auth",),
            fetches=(
                Fetch("user", "users", "/users/{id}"),
                Fetch("orders", "orders", "/orders?user={id}"),
                Fetch("status", "http://status:9000", "/ping"),
            ),
            timeout=2.0,
        ),
    )
    assert "http://status:9000" in config.upstreams
    assert config.aggregates[0].required == ()
    assert config.aggregates[0].max_part_body == 1024 * 1024
    assert config.aggregates[0].breaker is None


AGGREGATE_BASE = UPSTREAM + """
[upstream:orders]
targets = http://localhost:5000
[filter:breaker]
use = circuit_breaker
[filter:auth]
use = jwt
secret = s
"""

BREAKER_FACTORIES = dict(FACTORIES, circuit_breaker=lambda section: ("breaker", dict(section)))


def aggregate_problems(body: str) -> list[str]:
    """The problems of an [aggregate:p] section with C{body}, beside valid upstreams/filters."""
    return problems(AGGREGATE_BASE + "[aggregate:p]\n" + textwrap.dedent(body),
                    factories=BREAKER_FACTORIES)


def test_aggregate_parts_that_use_other_parts_answers_required_breaker_and_body_limit():
    config = parse(
        AGGREGATE_BASE
        + textwrap.dedent(
            """
        [aggregate:profile]
        path = /profile/{id}
        fetch.user = users /users/{id}
        fetch.orders = orders /orders?user={id}&team={user.team.id}
        fetch.items = orders /items?ids={orders.item_ids}&of={user.name}
        required = user items
        breaker = breaker
        max_part_body = 64KB
        """
        ),
        factories=BREAKER_FACTORIES,
    )
    (aggregate,) = config.aggregates
    assert [(f.name, f.after) for f in aggregate.fetches] == [
        ("user", ()), ("orders", ("user",)), ("items", ("orders", "user"))
    ]
    assert aggregate.required == ("user", "items")
    assert aggregate.breaker == "breaker"
    assert aggregate.max_part_body == 64 * 1024
    slots = aggregate.fetches[2].template.slots
    assert [(slot.reference, slot.in_query) for slot in slots] == [
        (("orders", "item_ids"), True), (("user", "name"), True)
    ]


def test_aggregate_reference_to_an_unknown_part_is_one_line():
    assert aggregate_problems("""
        path = /p/{id}
        fetch.orders = orders /orders?user={id}
        fetch.items = orders /items?ids={ordrs.item_ids}
    """) == [
        "gw.ini: [aggregate:p] fetch.items: {ordrs.item_ids}: no part 'ordrs' in this aggregate"
        " (did you mean 'orders'?)"
    ]


def test_aggregate_parts_waiting_for_each_other_are_a_cycle():
    assert aggregate_problems("""
        path = /p/{id}
        fetch.a = users /a/{c.x}
        fetch.b = users /b/{a.x}
        fetch.c = users /c/{b.x}
        fetch.d = users /d/{a.x}
    """) == [
        "gw.ini: [aggregate:p] fetch.a: parts wait for each other's answers in a cycle:"
        " a -> c -> b -> a"
    ]
    assert aggregate_problems("""
        path = /p
        fetch.a = users /a/{a.x}
    """) == ["gw.ini: [aggregate:p] fetch.a: {a.x} would be this part's own answer"]


def test_aggregate_required_must_name_parts():
    assert aggregate_problems("""
        path = /p/{id}
        fetch.user = users /users/{id}
        required = usr user user
    """) == [
        "gw.ini: [aggregate:p] required: 'usr' is not a part of this aggregate (a fetch.NAME)"
        " (did you mean 'user'?)",
        "gw.ini: [aggregate:p] required: 'user' is listed twice",
    ]


def test_aggregate_breaker_must_be_a_circuit_breaker_section():
    assert aggregate_problems("""
        path = /p
        fetch.user = users /users
        breaker = braker
    """) == [
        "gw.ini: [aggregate:p] breaker: no section [filter:braker] (did you mean 'breaker'?)"
    ]
    assert aggregate_problems("""
        path = /p
        fetch.user = users /users
        breaker = auth
    """) == [
        "gw.ini: [aggregate:p] breaker: [filter:auth] is a 'jwt' filter, not a circuit_breaker"
    ]


def test_aggregate_placeholders_must_come_from_the_path_or_a_part():
    assert aggregate_problems("""
        path = /p/{id}
        fetch.user = users /users/{uid}
        fetch.team = users /teams/{id.x}
    """) == [
        "gw.ini: [aggregate:p] fetch.user: {uid} is not in path '/p/{id}', nor the name of a part"
        " (did you mean 'id'?)",
        "gw.ini: [aggregate:p] fetch.team: {id.x}: {id} of path '/p/{id}' is a text, with no"
        " fields",
    ]


@pytest.mark.parametrize(
    "path, problem",
    [
        ("users/{id}", "'users/{id}' must be a path starting with '/'"),
        ("/users/{id}#x", "'/users/{id}#x' must not have a fragment ('#...')"),
        ("/users/../{id}", "'/users/../{id}' must not contain '.' or '..' segments"),
        ("/users/%2e%2E/{id}", "'/users/%2e%2E/{id}' must not contain '.' or '..' segments"),
        ("/users//{id}", "'/users//{id}' must not contain empty segments ('//')"),
        ("/users/{id", "'/users/{id' has an unmatched '{' or '}'"),
        ("/users/{a b}", None),  # two words: not 'UPSTREAM /path'
        ("/users/{1d}", "'/users/{1d}': '{1d}' is not a placeholder like '{id}' or"
                        " '{part.field}'"),
        ("/users/%zz/{id}", "'/users/%zz/{id}' has a character that does not belong in a URL"
                            " (or a '%' not followed by two hex digits)"),
        ("/users/\x01/{id}", "'/users/\x01/{id}' has a character that does not belong in a"
                              " URL (or a '%' not followed by two hex digits)"),
    ],
)
def test_aggregate_fetch_templates_that_could_not_be_filled_safely(path, problem):
    found = aggregate_problems(f"path = /p/{{id}}\nfetch.user = users {path}\n")
    if problem is None:
        assert len(found) == 1 and "must be 'UPSTREAM /path'" in found[0]
    else:
        assert found == [f"gw.ini: [aggregate:p] fetch.user: {problem}"]


def test_aggregate_errors_is_no_part_name_and_max_part_body_is_a_size():
    assert aggregate_problems("""
        path = /p
        fetch.errors = users /e
        fetch.ok = users /ok
        max_part_body = lots
    """) == [
        "gw.ini: [aggregate:p] fetch.errors: 'errors' is the answer's key for the parts that"
        " failed: give this part another name",
        "gw.ini: [aggregate:p] max_part_body: 'lots' is not a size (use 512KB, 10MB, 1GB or a"
        " number of bytes)",
    ]


def test_two_aggregates_taking_the_same_requests_are_refused():
    assert problems(UPSTREAM + textwrap.dedent("""
        [aggregate:a]
        path = /p/{id}
        fetch.x = users /x
        [aggregate:b]
        path = /p/{name}
        fetch.x = users /x
        [aggregate:c]
        path = /p/{id}
        fetch.x = users /x
        [aggregate:d]
        path = /p/me
        fetch.x = users /x
    """)) == [
        "gw.ini: [aggregate:b] path: '/p/{name}' takes the same requests as '/p/{id}', the path"
        " of [aggregate:a]",
        "gw.ini: [aggregate:c] path: '/p/{id}' is already the path of [aggregate:a]",
    ]


def test_aggregate_defaults_and_problems():
    config = parse(UPSTREAM + "[aggregate:p]\npath = /p\nfetch.x = users /x\n")
    assert config.aggregates[0].timeout == 5.0
    assert config.aggregates[0].filters == ()
    assert problems(
        UPSTREAM
        + textwrap.dedent(
            """
        [aggregate:p]
        path = /p/{id}/x{tail}
        fetch = users /x
        fetch.a = users /users/{uid}
        fetch.b = userz /b
        fetch.c = users
        """
        )
    ) == [
        "gw.ini: [aggregate:p] path: '/p/{id}/x{tail}': a placeholder must be a whole segment"
        " like '/{id}'",
        "gw.ini: [aggregate:p] fetch: unknown key (did you mean 'fetch.NAME'?)",
        "gw.ini: [aggregate:p] fetch.b: no section [upstream:userz] (did you mean 'users'?)",
        "gw.ini: [aggregate:p] fetch.c: 'users' must be 'UPSTREAM /path'"
        " (e.g. 'users /users/{id}')",
    ]
    assert problems(UPSTREAM + "[aggregate:p]\npath = /p/{id}\nfetch.a = users /u/{uid}\n") == [
        "gw.ini: [aggregate:p] fetch.a: {uid} is not in path '/p/{id}', nor the name of a part"
        " (did you mean 'id'?)"
    ]
    assert problems("[aggregate:p]\npath = /p\n") == [
        "gw.ini: [aggregate:p]: needs at least one fetch.NAME = UPSTREAM /path key"
    ]
    assert problems("[aggregate:p]\nfetch.a = http://x /a\n") == [
        "gw.ini: [aggregate:p] path: required"
    ]


# -- sections, names and the file itself ----------------------------------------------------------


def test_unknown_section_is_one_exact_line():
    assert problems("[bogus]\n") == ["gw.ini: [bogus]: unknown section"]
    assert problems("[DEFAULT]\nlisten = tcp:1\n") == ["gw.ini: [DEFAULT]: unknown section"]
    assert problems("[gatway]\n") == ["gw.ini: [gatway]: unknown section (did you mean [gateway]?)"]
    assert problems("[upstreams:x]\ntargets = http://a\n") == [
        "gw.ini: [upstreams:x]: unknown section (did you mean [upstream:x]?)"
    ]
    assert problems("[route]\n") == [
        "gw.ini: [route]: unknown section (did you mean [route:NAME]?)"
    ]


def test_section_names_must_be_simple():
    assert problems("[upstream:my users]\ntargets = http://a\n") == [
        "gw.ini: [upstream:my users]: 'my users' is not a valid name"
        " (use letters, digits, '_', '-', '.')"
    ]


def test_ini_syntax_problems_are_lines_too_and_the_rest_is_still_checked():
    assert problems(
        """
        stray = 1
        [gateway]
        listen = tcp:3000
        listen = tcp:3001
        this is not a key
        request_timeout = 5x
        [gateway]
        workers = 1
        [route:a]
        """
    ) == [
        "gw.ini: line 2: 'stray = 1' is outside any section (put it under a header like [gateway])",
        "gw.ini: line 5: [gateway] listen: duplicate key (first on line 4)",
        "gw.ini: line 6: cannot parse 'this is not a key' (expected 'key = value' or '[section]')",
        "gw.ini: [gateway] request_timeout: '5x' is not a duration (use 250ms, 30s, 5m, 1h)",
        "gw.ini: line 8: [gateway]: duplicate section (first on line 3)",
        "gw.ini: [route:a] prefix: required",
        "gw.ini: [route:a] upstream: required",
    ]


def test_an_indented_section_header_is_reported_not_swallowed():
    text = "[filter:x]\nuse = jwt\nsecret = s\n  [route:y]\n  prefix = /y\n"
    assert problems(text) == [
        "gw.ini: line 4: '[route:y]' is indented, so it continues the value above it"
        " (remove the indentation to start a section)"
    ]


def test_a_multiline_value_in_a_message_stays_on_one_line():
    assert problems("[route:x]\nprefix = /x\nupstream = http://a\n  http://b\n") == [
        "gw.ini: [route:x] upstream: 'http://a\\nhttp://b' must be one upstream name or URL"
    ]


def test_many_problems_come_out_in_file_order_one_line_each():
    lines = problems(
        """
        [route:b]
        prefix = b
        upstream = nowhere
        [gateway]
        idle_timeout = forever
        filters = missing
        [upstream:u]
        targets = ftp://x
        weights = 0
        [bogus]
        """
    )
    assert lines == [
        "gw.ini: [route:b] prefix: 'b' must start with '/'",
        "gw.ini: [route:b] upstream: no section [upstream:nowhere]",
        "gw.ini: [gateway] idle_timeout: 'forever' is not a duration (use 250ms, 30s, 5m, 1h)",
        "gw.ini: [gateway] filters: no section [filter:missing]",
        "gw.ini: [upstream:u] targets: 'ftp://x' is not an http:// or https:// URL",
        "gw.ini: [upstream:u] weights: each weight must be at least 1",
        "gw.ini: [bogus]: unknown section",
    ]


def test_keys_are_case_sensitive_but_suggested():
    assert problems("[gateway]\nListen = tcp:3000\n") == [
        "gw.ini: [gateway] Listen: unknown key (did you mean 'listen'?)"
    ]


def test_path_is_printed_as_given():
    with pytest.raises(ConfigError) as raised:
        parse("[bogus]\n", path="/tmp/x/broken.ini")
    assert raised.value.problems == ["/tmp/x/broken.ini: [bogus]: unknown section"]


def test_load_config_reads_the_file(tmp_path):
    path = tmp_path / "gw.ini"
    path.write_text(UPSTREAM + "[route:u]\nprefix = /u\nupstream = users\n")
    config = load_config(str(path), environ={})
    assert config.path == str(path)
    assert config.routes[0].upstream == "users"


def test_load_config_missing_file_is_one_line(tmp_path):
    missing = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError) as raised:
        load_config(missing, environ={})
    assert raised.value.problems == [f"{missing}: cannot read: No such file or directory"]


# -- ${NAME} substitution and env_file -------------------------------------------------------------


def test_variables_and_defaults_are_substituted():
    config = parse(
        """
        [gateway]
        listen = tcp:${PORT} tcp:${ADMIN_PORT:-3002}
        request_timeout = ${TIMEOUT:-30s}
        [upstream:users]
        targets = ${USERS:-http://localhost:4000} http://${HOST}:4001
        """,
        environ={"PORT": "8080", "HOST": "users.internal", "TIMEOUT": ""},
    )
    assert config.gateway.listen == ("tcp:8080", "tcp:3002")
    # As in the shell, ${NAME:-default} also covers a variable that is set but empty.
    assert config.gateway.request_timeout == 30.0
    assert [t.url for t in config.upstreams["users"].targets] == [
        "http://localhost:4000",
        "http://users.internal:4001",
    ]


def test_unset_variable_is_one_exact_line():
    assert problems("[gateway]\nlisten = tcp:${PORT}\n") == [
        "gw.ini: [gateway] listen: ${PORT} is not set"
    ]


def test_malformed_references():
    assert problems("[gateway]\nlisten = tcp:${PORT\n") == [
        "gw.ini: [gateway] listen: '${PORT' is missing its closing '}'"
    ]
    assert problems("[gateway]\nlisten = tcp:${A:-${B}}\n") == [
        "gw.ini: [gateway] listen: '${A:-...}': a default cannot contain another ${...}"
    ]
    assert problems("[gateway]\nlisten = tcp:${1PORT}\n") == [
        "gw.ini: [gateway] listen: '${1PORT}' is not a valid reference"
        " (use ${NAME} or ${NAME:-default})"
    ]


def test_env_file_fills_variables_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text(
        "# settings\n"
        "PORT=4000\n"
        "export TIMEOUT = 3s\n"
        'TARGET="http://from-file:1"\n'
        "SECRET='quoted value'\n"
        "\n"
    )
    config = parse(
        """
        [gateway]
        env_file = .env
        listen = tcp:${PORT}
        request_timeout = ${TIMEOUT}
        [upstream:u]
        targets = ${TARGET}
        [filter:auth]
        use = jwt
        secret = ${SECRET}
        """,
        environ={"PORT": "5000"},
        base_dir=str(tmp_path),
    )
    assert config.gateway.env_file == str(tmp_path / ".env")
    assert config.gateway.listen == ("tcp:5000",)
    assert config.gateway.request_timeout == 3.0
    assert config.upstreams["u"].targets[0].url == "http://from-file:1"
    assert config.filters["auth"].settings == ("jwt-settings", {"secret": "quoted value"})


def test_env_file_name_is_substituted_from_the_environment_only(tmp_path):
    (tmp_path / "prod.env").write_text("PORT=4100\nWHICH=nope\n")
    text = "[gateway]\nenv_file = ${WHICH}.env\nlisten = tcp:${PORT}\n"
    config = parse(text, environ={"WHICH": "prod"}, base_dir=str(tmp_path))
    assert config.gateway.listen == ("tcp:4100",)
    assert problems(text, base_dir=str(tmp_path)) == [
        "gw.ini: [gateway] env_file: ${WHICH} is not set",
        "gw.ini: [gateway] listen: ${PORT} is not set",
    ]


def test_env_file_is_relative_to_the_config_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / ".env").write_text("PORT=4200\n")
    (conf / "gw.ini").write_text("[gateway]\nenv_file = .env\nlisten = tcp:${PORT}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(os.path.join("conf", "gw.ini"), environ={})
    assert config.gateway.listen == ("tcp:4200",)
    assert config.path == os.path.join("conf", "gw.ini")


def test_missing_env_file_is_one_exact_line(tmp_path):
    assert problems("[gateway]\nenv_file = .env\n", base_dir=str(tmp_path)) == [
        "gw.ini: [gateway] env_file: cannot read '.env': No such file or directory"
    ]


def test_bad_env_file_line(tmp_path):
    (tmp_path / ".env").write_text("OK=1\nnot a variable\n")
    assert problems("[gateway]\nenv_file = .env\n", base_dir=str(tmp_path)) == [
        "gw.ini: [gateway] env_file: '.env' line 2: expected KEY=VALUE"
    ]


# -- the objects -----------------------------------------------------------------------------------

FULL = """
[gateway]
filters = auth
[status]
listen = tcp:3001
[store]
backend = memory
[upstream:users]
targets = http://localhost:4000 http://localhost:4001
weights = 2 1
health_check = /health
[route:users]
prefix = /users
upstream = users
methods = GET POST
filters = limit
[route:open]
prefix = /open
upstream = http://localhost:5000
public = yes
[filter:auth]
use = jwt
secret = s
[filter:limit]
use = ratelimit
rate = 10/s
[aggregate:profile]
path = /profile/{id}
fetch.user = users /users/{id}
"""


def test_everything_is_frozen():
    config = parse(FULL)
    assert isinstance(config, GatewayConfig)
    frozen = [
        (config, "path"),
        (config.gateway, "listen"),
        (config.status, "listen"),
        (config.store, "backend"),
        (config.upstreams["users"], "balance"),
        (config.upstreams["users"].targets[0], "port"),
        (config.routes[0], "prefix"),
        (config.filters["auth"], "use"),
        (config.aggregates[0], "timeout"),
        (config.aggregates[0].fetches[0], "path"),
    ]
    for obj, field in frozen:
        assert attrs.has(type(obj))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(obj, field, None)
    assert isinstance(config.upstreams, types.MappingProxyType)
    assert isinstance(config.filters, types.MappingProxyType)
    with pytest.raises(TypeError):
        config.upstreams["x"] = None
    with pytest.raises(TypeError):
        config.filters["x"] = None
    assert isinstance(config.routes, tuple) and isinstance(config.aggregates, tuple)
    assert isinstance(config.routes[0].methods, frozenset)


def test_format_summary_shows_routes_chains_upstreams_and_filters():
    summary = format_summary(parse(FULL))
    lines = summary.splitlines()
    assert "  /users -> users  [route:users]" in lines
    assert "    methods: GET POST; strip_prefix: no; preserve_host: no" in lines
    assert "    chain: auth (global) -> limit" in lines
    assert any(
        line.startswith("  /open -> http://localhost:5000") and "public" in line for line in lines
    )
    assert "    http://localhost:4000 (weight 2)" in lines
    assert "    http://localhost:4001 (weight 1)" in lines
    assert "  users: round_robin" in lines
    assert any("GET /health every 5s" in line for line in lines)
    assert "  auth: jwt" in lines
    assert "  limit: ratelimit" in lines
    assert "    user <- users /users/{id}" in lines
    assert "    required: (none); breaker: (none); max_part_body: 1MB" in lines


def test_format_summary_shows_an_aggregates_required_parts_breaker_and_waits():
    config = parse(
        AGGREGATE_BASE + textwrap.dedent("""
        [aggregate:profile]
        path = /profile/{id}
        fetch.user = users /users/{id}
        fetch.orders = orders /orders?user={user.id}
        required = user
        breaker = breaker
        max_part_body = 64KB
        """),
        factories=BREAKER_FACTORIES,
    )
    lines = format_summary(config).splitlines()
    assert "  /profile/{id}  [aggregate:profile]  timeout 5s; chain: (none)" in lines
    assert "    required: user; breaker: breaker (one state per part); max_part_body: 64KB" in lines
    assert "    orders <- orders /orders?user={user.id}  (after user)" in lines


def test_config_error_and_section_error_carry_their_problems():
    error = ConfigError(["a: [b] c: d", "e: [f] g: h"])
    assert error.problems == ["a: [b] c: d", "e: [f] g: h"]
    assert str(error) == "a: [b] c: d\ne: [f] g: h"
    section_error = SectionError([("secret", "required")])
    assert section_error.problems == [("secret", "required")]


def test_upstreams_a_filter_names_must_exist():
    class BreakerSettings:
        def __init__(self, fallback):
            self.upstream_references = (("fallback", fallback),)

    factories = {"circuit_breaker": lambda section: BreakerSettings(section["fallback"])}
    text = UPSTREAM + "[filter:breaker]\nuse = circuit_breaker\nfallback = {}\n"
    assert problems(text.format("userz"), factories=factories) == [
        "gw.ini: [filter:breaker] fallback: no section [upstream:userz] (did you mean 'users'?)"
    ]
    config = parse(text.format("users"), factories=factories)
    assert config.filters["breaker"].settings.upstream_references == (("fallback", "users"),)


def test_a_routes_stream_idle_timeout_defaults_to_an_hour_and_is_a_duration():
    config = parse_config(
        "[route:a]\nprefix = /a\nupstream = http://127.0.0.1:1\n"
        "[route:b]\nprefix = /b\nupstream = http://127.0.0.1:1\nstream_idle_timeout = 90s\n"
    )
    assert [route.stream_idle_timeout for route in config.routes] == [3600.0, 90.0]
