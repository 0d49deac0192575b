"""The status listener's pages, in memory: /metrics, /status.json, /healthz, /status, admin."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistgate.config import parse_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway
from twistgate.status.admin import admin_tree
from twistgate.status.pages import StatusSite
from twistgate.status.traffic import UNROUTED

FACTORIES = filter_factories()
VALIDATORS = {name: factory.validate for name, factory in FACTORIES.items()}

CONFIG = """
[gateway]
listen = tcp:0:interface=127.0.0.1
access_log = off
[status]
listen = tcp:0:interface=127.0.0.2
[upstream:users]
targets = http://127.0.0.1:4000 http://127.0.0.1:4001
[filter:breaker]
use = circuit_breaker
failures = 3
[route:users]
prefix = /users
upstream = users
filters = breaker
[route:orders]
prefix = /orders
upstream = http://127.0.0.1:5000
"""


def make_gateway(text=CONFIG, load=None):
    clock = MemoryReactorClock()
    clock.advance(1_000_000)
    config = parse_config(text, filter_factories=VALIDATORS)
    return Gateway(config, clock, FACTORIES, load=load)


def http(site, method=b"GET", path=b"/", headers=()):
    """One HTTP/1.0 exchange with C{site} over a fake transport: (status, headers, body)."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    head = b"%s %s HTTP/1.0\r\nHost: 127.0.0.1:3001\r\n" % (method, path)
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    channel.dataReceived(head + b"\r\n")
    raw = transport.value()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    answer = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        answer[name.lower()] = value
    return int(lines[0].split(b" ")[1]), answer, body


def get_json(site, path):
    status, headers, body = http(site, b"GET", path)
    assert headers[b"content-type"] == b"application/json"
    return status, json.loads(body)


def public_request(gw, path=b"/nowhere", method=b"GET"):
    """A request through the public site, in memory (the router answers it: no upstream)."""
    return http(gw.site, method, path)


class FakeRequest:
    def __init__(self, started, route, code=200, context=None):
        self.started = started
        self.code = code
        self.method = b"GET"
        self.sentLength = 0
        self.exchange = type("E", (), {
            "route": type("R", (), {"name": route, "aggregate": False})(),
            "context": context or {},
        })()


def metrics(gw):
    status, headers, body = http(gw.status.site, b"GET", b"/metrics")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# /metrics


def test_metrics_parse_and_the_request_counter_rises_with_traffic():
    gw = make_gateway()
    before = metrics(gw)
    for _ in range(3):
        assert public_request(gw)[0] == 404
    after = metrics(gw)
    key = dict(route=UNROUTED, method="GET", code="404")
    assert value(after, "twistgate_requests_total", **key) - value(
        before, "twistgate_requests_total", **key
    ) == 3
    assert value(after, "twistgate_request_duration_seconds_count", route=UNROUTED) == 3
    assert value(after, "twistgate_request_duration_seconds_bucket", route=UNROUTED, le="+Inf") == 3


def test_metrics_show_every_figure_named_in_the_docs():
    gw = make_gateway()
    traffic = gw.status.traffic
    now = gw.reactor.seconds()
    a = "http://127.0.0.1:4000"
    traffic.observe(FakeRequest(now - 0.02, "users", context={
        "attempts": [("users", a, "response")], "cache": "HIT"}))
    gw.runtime.filters["limit"] = FakeLimit(rejections=7)
    gw.site.in_flight = 2
    gw.status.monitor.lag = 0.125
    samples = metrics(gw)
    assert value(samples, "twistgate_requests_total", route="users", method="GET", code="200") == 1
    assert value(samples, "twistgate_request_duration_seconds_bucket", route="users",
                 le="0.025") == 1
    assert value(samples, "twistgate_request_duration_seconds_bucket", route="users",
                 le="0.01") == 0
    assert value(samples, "twistgate_upstream_requests_total", upstream="users", target=a,
                 outcome="response") == 1
    assert value(samples, "twistgate_upstream_target_up", upstream="users", target=a) == 1
    assert value(samples, "twistgate_circuit_state", filter="breaker") == 0
    assert value(samples, "twistgate_cache_requests_total", result="HIT") == 1
    assert value(samples, "twistgate_ratelimit_rejections_total", filter="limit") == 7
    assert value(samples, "twistgate_in_flight_requests") == 2
    assert value(samples, "twistgate_event_loop_lag_seconds") == 0.125
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    # every configured route has a histogram, traffic or not
    assert value(samples, "twistgate_request_duration_seconds_count", route="orders") == 0
    assert ("twistgate_request_duration_seconds_count", (("route", "orders"),)) in samples


def test_live_gauges_are_read_when_scraped():
    gw = make_gateway()
    breaker = gw.runtime.filters["breaker"]
    pool = gw.runtime.upstreams["users"].pool
    assert value(metrics(gw), "twistgate_circuit_state", filter="breaker") == 0
    breaker.state = "open"
    assert value(metrics(gw), "twistgate_circuit_state", filter="breaker") == 1
    breaker.state = "half_open"
    assert value(metrics(gw), "twistgate_circuit_state", filter="breaker") == 2
    target = pool.targets[0]
    target.healthy = False
    samples = metrics(gw)
    url = target.target.url
    assert value(samples, "twistgate_upstream_target_up", upstream="users", target=url) == 0
    other = pool.targets[1].target.url
    assert value(samples, "twistgate_upstream_target_up", upstream="users", target=other) == 1


def test_a_pool_in_panic_shows_on_metrics_and_status_json():
    gw = make_gateway()
    pool = gw.runtime.upstreams["users"].pool
    samples = metrics(gw)
    for name in ("twistgate_upstream_panic", "twistgate_upstream_panics_total"):
        assert (name, (("upstream", "users"),)) in samples
        assert samples[(name, (("upstream", "users"),))] == 0
    _, report = get_json(gw.status.site, b"/status.json")
    users = next(u for u in report["upstreams"] if u["name"] == "users")
    assert (users["panic"], users["panics"]) == (False, 0)

    for state in pool.targets:
        for _ in range(pool.config.max_fails):
            pool.report_failure(state)
    samples = metrics(gw)
    assert value(samples, "twistgate_upstream_panic", upstream="users") == 1
    assert value(samples, "twistgate_upstream_panics_total", upstream="users") == 1
    assert value(samples, "twistgate_upstream_panic", upstream="http://127.0.0.1:5000") == 0
    _, report = get_json(gw.status.site, b"/status.json")
    pools = {u["name"]: u for u in report["upstreams"]}
    assert (pools["users"]["panic"], pools["users"]["panics"]) == (True, 1)
    assert all(not t["available"] for t in pools["users"]["targets"])
    assert pools["http://127.0.0.1:5000"]["panic"] is False

    # the time outs end: the pool is out of panic, and the episode stays counted
    gw.reactor.advance(pool.config.fail_timeout)
    samples = metrics(gw)
    assert value(samples, "twistgate_upstream_panic", upstream="users") == 0
    assert value(samples, "twistgate_upstream_panics_total", upstream="users") == 1
    _, report = get_json(gw.status.site, b"/status.json")
    users = next(u for u in report["upstreams"] if u["name"] == "users")
    assert (users["panic"], users["panics"]) == (False, 1)


class FakeLimit:
    """A filter that looks like a rate limit to the status pages (duck typing)."""

    name = "limit"
    authenticates = False

    def __init__(self, rejections=0):
        self.rejections = rejections


def test_rate_limit_figures_work_with_filters_that_have_only_some_counters():
    gw = make_gateway()
    gw.runtime.filters["limit"] = FakeLimit(rejections=3)
    samples = metrics(gw)
    assert value(samples, "twistgate_ratelimit_rejections_total", filter="limit") == 3
    assert value(samples, "twistgate_ratelimit_shadow_rejections_total", filter="limit") == 0
    status, report = get_json(gw.status.site, b"/status.json")
    assert report["ratelimit"] == {
        "rejections": 3,
        "filters": [{"filter": "limit", "rejections": 3, "shadow_rejections": 0,
                     "store_failures": 0}],
    }


@pytest.mark.skipif("ratelimit" not in FACTORIES, reason="the ratelimit filter is not installed")
def test_the_ratelimit_filters_rejections_show_on_metrics_and_status_json():
    gw = make_gateway(CONFIG + "[filter:limit]\nuse = ratelimit\nrate = 1/1m\n"
                      "[route:limited]\nprefix = /limited\nupstream = users\nfilters = limit\n")
    limit = gw.runtime.filters["limit"]
    limit.rejections += 4
    assert value(metrics(gw), "twistgate_ratelimit_rejections_total", filter="limit") == 4
    _, report = get_json(gw.status.site, b"/status.json")
    assert report["ratelimit"]["rejections"] == 4


def test_two_gateways_never_share_a_counter():
    one, two = make_gateway(), make_gateway()
    public_request(one)
    assert value(metrics(one), "twistgate_requests_total", route=UNROUTED, method="GET",
                 code="404") == 1
    assert value(metrics(two), "twistgate_requests_total", route=UNROUTED, method="GET",
                 code="404") == 0


# /status.json


def test_status_json_counts_requests_and_rates_over_whole_seconds():
    gw = make_gateway()
    clock = gw.reactor
    for _ in range(4):
        public_request(gw)
    clock.advance(1)
    for _ in range(2):
        public_request(gw)
    clock.advance(1)
    status, report = get_json(gw.status.site, b"/status.json")
    assert status == 200
    assert report["requests"]["total"] == 6
    assert report["requests"]["classes"] == {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 6, "5xx": 0}
    assert report["requests"]["rate"]["1s"] == 2.0
    # two seconds have passed since start: the longer windows divide by those two
    assert report["requests"]["rate"]["10s"] == 3.0
    assert report["requests"]["rate"]["60s"] == 3.0
    assert report["history"]["requests"][-2:] == [4, 2]
    assert len(report["history"]["requests"]) == 60
    assert report["history"]["4xx"][-2:] == [4, 2]


def test_status_json_has_routes_targets_circuits_cache_and_process():
    gw = make_gateway()
    traffic = gw.status.traffic
    now = gw.reactor.seconds()
    a = "http://127.0.0.1:4000"
    traffic.observe(FakeRequest(now - 0.0045, "users", context={
        "attempts": [("users", a, "error"), ("users", "http://127.0.0.1:4001", "response")],
        "cache": "MISS"}))
    traffic.observe(FakeRequest(now - 0.0025, "users", code=502, context={"cache": "HIT"}))
    traffic.observe(FakeRequest(now - 0.0025, "users", context={"cache": "HIT"}))
    _, report = get_json(gw.status.site, b"/status.json")
    users = next(r for r in report["routes"] if r["name"] == "users")
    assert users["prefix"] == "/users" and users["upstream"] == "users"
    assert users["requests"] == 3 and users["errors"] == 1
    assert 2.0 <= users["latency_ms"]["p50"] <= 3.0
    assert 4.0 <= users["latency_ms"]["p99"] <= 5.0
    assert [r["name"] for r in report["routes"]] == ["users", "orders"]
    pools = {u["name"]: u for u in report["upstreams"]}
    targets = {t["url"]: t for t in pools["users"]["targets"]}
    assert targets[a]["requests"] == 1 and targets[a]["errors"] == 1
    assert targets[a]["available"] is True and targets[a]["in_flight"] == 0
    assert targets["http://127.0.0.1:4001"]["outcomes"] == {"response": 1}
    assert report["circuits"] == [
        {"filter": "breaker", "state": "closed",
         "transitions": {"closed": 0, "open": 0, "half_open": 0}}
    ]
    assert report["cache"] == {"lookups": 3, "hits": 2, "hit_ratio": 0.6667,
                               "results": {"HIT": 2, "MISS": 1}}
    assert report["process"]["rss_bytes"] > 0
    assert report["in_flight"] == 0 and report["draining"] is False


def test_status_json_latency_percentiles_are_over_the_last_minute():
    gw = make_gateway()
    traffic = gw.status.traffic
    clock = gw.reactor
    traffic.observe(FakeRequest(clock.seconds() - 2.0, "users"))
    clock.advance(61)
    traffic.observe(FakeRequest(clock.seconds() - 0.0008, "users"))
    _, report = get_json(gw.status.site, b"/status.json")
    # the 2 s request is over a minute old
    assert report["latency_ms"]["p99"] <= 1.0


# /healthz


def test_healthz_is_ok_while_serving_and_503_while_draining():
    gw = make_gateway()
    assert get_json(gw.status.site, b"/healthz") == (200, {"status": "ok"})
    gw.site.drain()
    assert get_json(gw.status.site, b"/healthz") == (503, {"status": "draining"})


# /status and its files


def test_the_dashboard_page_loads_only_its_own_files():
    gw = make_gateway()
    status, headers, body = http(gw.status.site, b"GET", b"/status")
    assert status == 200 and headers[b"content-type"] == b"text/html; charset=utf-8"
    assert b"default-src 'none'" in headers[b"content-security-policy"]
    for key in (b'id="total-requests"', b'id="requests-per-second"', b'id="latency-p99"',
                b'id="routes-table"', b'id="targets-table"', b'id="chart-requests"'):
        assert key in body
    assert b"http://" not in body.replace(b'href="status.json"', b"")
    assert b"https://" not in body
    for path, kind in ((b"/static/dashboard.js", b"application/javascript"),
                       (b"/static/dashboard.css", b"text/css")):
        status, headers, body = http(gw.status.site, b"GET", path)
        assert status == 200 and headers[b"content-type"].startswith(kind) and body


def test_the_root_and_a_trailing_slash_lead_to_the_dashboard():
    gw = make_gateway()
    status, headers, _ = http(gw.status.site, b"GET", b"/")
    assert status == 302 and headers[b"location"] == b"status"
    status, headers, _ = http(gw.status.site, b"GET", b"/status/")
    assert status == 301 and headers[b"location"] == b"../status"


def test_unknown_paths_and_methods_get_json_errors():
    gw = make_gateway()
    site = gw.status.site
    for path in (b"/nope", b"/static/", b"/static/../setup.py", b"/metrics/x", b"/admin"):
        status, body = get_json(site, path)
        assert status == 404 and body["error"] == "not_found", path
    status, headers, body = http(site, b"POST", b"/status.json")
    assert status == 405 and headers[b"allow"] == b"GET, HEAD"
    assert json.loads(body)["error"] == "method_not_allowed"


# The admin API, with a fake gateway


class FakeCache:
    def __init__(self, purged):
        self.purged = purged
        self.prefixes = []

    def purge_prefix(self, prefix):
        self.prefixes.append(prefix)
        return self.purged


class FakeDeferredCache(FakeCache):
    def purge_prefix(self, prefix):
        return succeed(super().purge_prefix(prefix))


class FakeGateway:
    def __init__(self, problems=(), filters=None):
        self.problems = list(problems)
        self.reloads = 0
        self.runtime = type("Runtime", (), {"filters": filters or {}})()

    purge = Gateway.purge

    def reload(self):
        self.reloads += 1
        return self.problems


def admin_site(gateway):
    return StatusSite(admin_tree(gateway), reactor=MemoryReactorClock())


def post(site, path, headers=()):
    status, answer, body = http(site, b"POST", path, headers)
    assert answer[b"content-type"] == b"application/json"
    return status, json.loads(body)


def test_admin_reload_reloads_and_says_so():
    gateway = FakeGateway()
    assert post(admin_site(gateway), b"/reload") == (200, {"reloaded": True})
    assert gateway.reloads == 1


def test_admin_reload_of_a_broken_file_answers_422_with_the_problems():
    problems = ["gw.ini: [route:users] upstream: no section [upstream:userz]"]
    gateway = FakeGateway(problems)
    assert post(admin_site(gateway), b"/reload") == (
        422, {"reloaded": False, "problems": problems})


def test_admin_endpoints_take_post_only():
    gateway = FakeGateway()
    site = admin_site(gateway)
    for method in (b"GET", b"PUT", b"DELETE"):
        for path in (b"/reload", b"/cache/purge?prefix=/users"):
            status, headers, body = http(site, method, path)
            assert status == 405 and headers[b"allow"] == b"POST"
            assert json.loads(body)["status"] == 405
    assert gateway.reloads == 0


def test_admin_refuses_requests_from_another_origin():
    gateway = FakeGateway()
    site = admin_site(gateway)
    status, body = post(site, b"/reload", [(b"Origin", b"http://evil.example")])
    assert status == 403 and gateway.reloads == 0
    status, body = post(site, b"/reload", [(b"Origin", b"http://127.0.0.1:3001")])
    assert status == 200 and gateway.reloads == 1


def test_purge_calls_every_filter_that_can_purge_and_adds_up():
    caches = {"a": FakeCache(3), "b": FakeDeferredCache(4), "breaker": object()}
    site = admin_site(FakeGateway(filters=caches))
    assert post(site, b"/cache/purge?prefix=/users") == (200, {"purged": 7})
    assert caches["a"].prefixes == ["/users"] and caches["b"].prefixes == ["/users"]


def test_purge_without_a_cache_purges_nothing():
    site = admin_site(FakeGateway(filters={"breaker": object()}))
    assert post(site, b"/cache/purge?prefix=/") == (200, {"purged": 0})


def test_purge_needs_a_path_prefix():
    cache = FakeCache(1)
    site = admin_site(FakeGateway(filters={"c": cache}))
    for path in (b"/cache/purge", b"/cache/purge?prefix=", b"/cache/purge?prefix=users"):
        status, body = post(site, path)
        assert status == 400 and body["error"] == "bad_request", path
    assert cache.prefixes == []


def test_admin_reload_on_a_real_gateway_applies_the_file():
    texts = [CONFIG]
    gw = make_gateway(load=lambda: parse_config(texts[0], filter_factories=VALIDATORS))
    texts[0] = CONFIG.replace("prefix = /orders", "prefix = /shop")
    status, body = post(gw.status.site, b"/admin/reload")
    assert (status, body) == (200, {"reloaded": True})
    assert gw.runtime.routes.match(b"/shop/1") is not None


def test_the_rate_limit_store_state_shows_on_metrics_and_status_json():
    _, report = get_json(make_gateway().status.site, b"/status.json")
    assert report["store"] == {"backend": "memory", "state": "up"}
    gw = make_gateway(CONFIG + "[store]\nbackend = redis\nurl = redis://:pw@127.0.0.1:1/0\n"
                      "nodes = 3\n")
    store = gw.runtime.rate_limit_store
    store.link.state, store.link.outages, store.link.errors = "down", 2, 5
    store.local_decisions = 40
    samples = metrics(gw)
    assert value(samples, "twistgate_store_up", backend="redis") == 0
    assert value(samples, "twistgate_store_outages_total", backend="redis") == 2
    assert value(samples, "twistgate_store_errors_total", backend="redis") == 5
    assert value(samples, "twistgate_store_local_decisions_total", backend="redis") == 40
    _, report = get_json(gw.status.site, b"/status.json")
    assert report["store"] == {
        "backend": "redis", "address": "redis://127.0.0.1:1/0", "state": "down", "outages": 2,
        "errors": 5, "local_decisions": 40, "nodes": 3, "store_timeout_ms": 50.0,
    }


# aggregates

AGGREGATE_CONFIG = CONFIG + """
[aggregate:profile]
path = /profile/{id}
fetch.user = users /users/{id}
fetch.orders = http://127.0.0.1:5000 /orders?user={id}
breaker = breaker
"""


def test_aggregates_and_their_parts_show_on_metrics_and_status_json():
    from twistgate.aggregate.part import PartResult

    gw = make_gateway(AGGREGATE_CONFIG)
    route = gw.runtime.aggregate_list[0]
    now = gw.reactor.seconds()
    request = FakeRequest(now - 0.3, "profile", context={"parts": [
        PartResult("user", "users", value={}, status=200, duration=0.004),
        PartResult("orders", "http://127.0.0.1:5000", reason="timeout", duration=0.3),
    ]})
    request.exchange.route = route
    gw.status.traffic.observe(request)

    samples = metrics(gw)
    assert value(samples, "twistgate_aggregate_requests_total", aggregate="profile",
                 method="GET", code="200") == 1
    assert value(samples, "twistgate_aggregate_partial_answers_total", aggregate="profile") == 1
    assert value(samples, "twistgate_aggregate_duration_seconds_bucket", aggregate="profile",
                 le="0.5") == 1
    assert value(samples, "twistgate_aggregate_part_requests_total", aggregate="profile",
                 part="orders", outcome="timeout") == 1
    assert value(samples, "twistgate_aggregate_part_requests_total", aggregate="profile",
                 part="user", outcome="ok") == 1
    assert value(samples, "twistgate_aggregate_part_duration_seconds_bucket",
                 aggregate="profile", part="user", le="0.005") == 1
    # The breaker of each part is a circuit of its own.
    assert value(samples, "twistgate_circuit_state", filter="breaker[profile.user]") == 0
    assert ("twistgate_circuit_state", (("filter", "breaker[profile.orders]"),)) in samples
    # An aggregate is not a route.
    assert value(samples, "twistgate_requests_total", route="profile", method="GET",
                 code="200") == 0

    _, report = get_json(gw.status.site, b"/status.json")
    (aggregate,) = report["aggregates"]
    assert aggregate["name"] == "profile" and aggregate["path"] == "/profile/{id}"
    assert aggregate["requests"] == 1 and aggregate["partial"] == 1
    assert [(p["name"], p["upstream"], p["requests"], p["failures"], p["outcomes"])
            for p in aggregate["parts"]] == [
        ("user", "users", 1, 0, {"ok": 1}),
        ("orders", "http://127.0.0.1:5000", 1, 1, {"timeout": 1}),
    ]
    assert aggregate["parts"][0]["latency_ms"]["p50"] is not None
    assert {c["filter"] for c in report["circuits"]} == {
        "breaker", "breaker[profile.user]", "breaker[profile.orders]"}


def test_a_served_aggregate_is_counted_through_the_public_site():
    gw = make_gateway(AGGREGATE_CONFIG)
    status, headers, body = public_request(gw, b"/profile/7", method=b"POST")
    assert status == 405 and headers[b"allow"] == b"GET, HEAD"
    samples = metrics(gw)
    assert value(samples, "twistgate_aggregate_requests_total", aggregate="profile",
                 method="POST", code="405") == 1


def test_stale_and_revalidated_answers_are_counted_on_metrics_and_status_json():
    gw = make_gateway()
    traffic = gw.status.traffic
    now = gw.reactor.seconds()
    for result in ("HIT", "STALE", "STALE", "REVALIDATED", "MISS"):
        traffic.observe(FakeRequest(now - 0.01, "users", context={"cache": result}))
    samples = metrics(gw)
    assert value(samples, "twistgate_cache_requests_total", result="STALE") == 2
    assert value(samples, "twistgate_cache_requests_total", result="REVALIDATED") == 1
    _, report = get_json(gw.status.site, b"/status.json")
    assert report["cache"]["results"] == {"HIT": 1, "MISS": 1, "REVALIDATED": 1, "STALE": 2}
    assert report["cache"]["lookups"] == 5 and report["cache"]["hits"] == 1
