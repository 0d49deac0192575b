"""
The cache filter through a real twistd, in front of a scripted upstream that records what it
receives. One gateway serves the whole module; each test uses paths of its own.

docs/cache.md lists these tests beside the RFC 9111 rules they show.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater
from twisted.web import server
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource

from tests.integration.harness import Gateway, free_port, serve, wait_for_port

SECRET = "cache-integration-secret-" * 3


class Answer:
    """What the scripted upstream answers for one path."""

    def __init__(self, code=200, headers=None, body=b"{}", delay=0.0, etag=None,
                 last_modified=None, refresh=None, phrase=None):
        self.code = code
        self.phrase = phrase
        self.headers = headers or {}
        self.body = body
        self.delay = delay
        self.etag = etag
        self.last_modified = last_modified
        self.refresh = refresh or {}  # fields sent with a 304


class Script(Resource):
    """An upstream answering each path as the test set it, validating like an origin does, and
    recording every request (method, uri, lower-cased header fields)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.answers: dict[str, Answer] = {}
        self.seen: list[dict] = []

    def set(self, path, **kwargs):
        self.answers[path] = Answer(**kwargs)

    def requests(self, path):
        return [seen for seen in self.seen if seen["uri"].split("?")[0] == path]

    def render(self, request):
        headers = {k.decode().lower(): b", ".join(v).decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append({"method": request.method.decode(), "uri": request.uri.decode(),
                          "headers": headers})
        answer = self.answers.get(request.path.decode(), Answer(404, body=b"unscripted"))
        if self._not_modified(answer, headers):
            request.setResponseCode(304)
            fields = dict(answer.headers)
            fields.update(answer.refresh)
            for name, value in fields.items():
                if name.lower() in ("cache-control", "expires", "vary", "x-version"):
                    request.setHeader(name, value)
            self._validators(request, answer)
            return b""
        request.setResponseCode(answer.code, answer.phrase)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        self._validators(request, answer)
        if not answer.delay:
            return answer.body
        d = deferLater(reactor, answer.delay, lambda: None)
        d.addCallback(lambda _: (request.write(answer.body), request.finish()))
        return server.NOT_DONE_YET

    @staticmethod
    def _validators(request, answer):
        if answer.etag:
            request.setHeader("etag", answer.etag)
        if answer.last_modified:
            request.setHeader("last-modified", answer.last_modified)

    @staticmethod
    def _not_modified(answer, headers):
        if answer.etag and "if-none-match" in headers:
            return answer.etag in headers["if-none-match"]
        if answer.last_modified and "if-modified-since" in headers:
            return headers["if-modified-since"] == answer.last_modified
        return False


CONFIG = """
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
access_log = off
[status]
listen = tcp:{status_port}:interface=127.0.0.1
[filter:auth]
use = jwt
secret = {secret}
algorithms = HS256
[filter:strict]
use = cache
[filter:ttl]
use = cache
ttl = 5m
[filter:per-user]
use = cache
[filter:shared]
use = cache
scope = shared
[filter:targeted]
use = cache
targeted = Twistgate-Cache-Control
[route:strict]
prefix = /strict
upstream = {url}
filters = strict
[route:ttl]
prefix = /ttl
upstream = {url}
filters = ttl
[route:user]
prefix = /user
upstream = {url}
filters = auth per-user
[route:shared]
prefix = /shared
upstream = {url}
filters = auth shared
[route:targeted]
prefix = /targeted
upstream = {url}
filters = targeted
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(gateway, script, status base URL): one twistd for the whole module."""
    script = Script()
    _, port = serve(script)
    url = "http://127.0.0.1:%d" % port.getHost().port
    status_port = free_port()
    gw = Gateway(tmp_path_factory.mktemp("cache"),
                 CONFIG.format(url=url, status_port=status_port, secret=SECRET)).start()
    wait_for_port(status_port, process=gw.process)
    yield gw, script, "http://127.0.0.1:%d" % status_port
    gw.stop()
    port.stopListening()


def token(sub):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, SECRET, algorithm="HS256")


def http_date(offset=0.0):
    return datetimeToString(int(time.time() + offset)).decode()


@pytest_twisted.inlineCallbacks
def get(gw, path, headers=None, method="GET"):
    response = yield treq.request(method, gw.url(path), headers=headers or {},
                                  allow_redirects=False)
    body = yield response.content()
    return response, body


def field(response, name):
    values = response.headers.getRawHeaders(name)
    return None if values is None else ", ".join(v.decode() for v in values)


@pytest_twisted.inlineCallbacks
def cache_results(gw, path, count=2, headers=None):
    """X-Cache of C{count} requests in a row."""
    results = []
    for _ in range(count):
        response, _ = yield get(gw, path, headers)
        results.append(field(response, b"x-cache"))
    return results


# --- storing and freshness ---------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_fresh_response_is_a_hit_with_age(env):
    gw, script, _ = env
    script.set("/strict/fresh", headers={"cache-control": "max-age=60", "x-app": "1"},
               body=b'{"fresh": true}')
    first, _ = yield get(gw, "/strict/fresh")
    second, body = yield get(gw, "/strict/fresh")
    assert (field(first, b"x-cache"), field(second, b"x-cache")) == ("MISS", "HIT")
    assert body == b'{"fresh": true}'
    assert int(field(second, b"age")) <= 1
    assert field(second, b"x-app") == "1"
    assert field(second, b"x-request-id") != field(first, b"x-request-id")
    assert len(script.requests("/strict/fresh")) == 1


@pytest_twisted.inlineCallbacks
def test_s_maxage_overrides_max_age(env):
    gw, script, _ = env
    script.set("/strict/smaxage", headers={"cache-control": "max-age=0, s-maxage=60"})
    assert (yield cache_results(gw, "/strict/smaxage")) == ["MISS", "HIT"]


@pytest_twisted.inlineCallbacks
def test_expires_is_read_against_date_and_an_invalid_one_means_expired(env):
    gw, script, _ = env
    script.set("/ttl/expires", headers={"expires": http_date(60)})
    assert (yield cache_results(gw, "/ttl/expires")) == ["MISS", "HIT"]
    script.set("/ttl/expired", headers={"expires": "0"})
    assert (yield cache_results(gw, "/ttl/expired")) == ["MISS", "MISS"]


@pytest_twisted.inlineCallbacks
def test_age_counts_the_age_the_upstream_reported(env):
    gw, script, _ = env
    script.set("/strict/aged", headers={"cache-control": "max-age=600", "age": "100"})
    yield get(gw, "/strict/aged")
    response, _ = yield get(gw, "/strict/aged")
    assert field(response, b"x-cache") == "HIT"
    assert 100 <= int(field(response, b"age")) <= 102


@pytest_twisted.inlineCallbacks
def test_no_store_private_and_set_cookie_are_not_stored(env):
    gw, script, _ = env
    for name, fields in [("nostore", {"cache-control": "no-store, max-age=60"}),
                         ("private", {"cache-control": "private, max-age=60"}),
                         ("cookie", {"cache-control": "max-age=60", "set-cookie": "s=1"})]:
        script.set("/strict/" + name, headers=fields)
        assert (yield cache_results(gw, "/strict/" + name)) == ["MISS", "MISS"], name
        assert len(script.requests("/strict/" + name)) == 2


@pytest_twisted.inlineCallbacks
def test_the_gateways_own_targeted_field_decides_and_never_reaches_the_client(env):
    gw, script, _ = env
    script.set("/targeted/own", headers={"cache-control": "no-store",
                                         "twistgate-cache-control": "max-age=60"})
    for expected in ("MISS", "HIT"):
        response, body = yield get(gw, "/targeted/own")
        assert (response.code, body, field(response, b"x-cache")) == (200, b"{}", expected)
        assert field(response, b"twistgate-cache-control") is None
        assert field(response, b"cache-control") == "no-store"  # still the client's
    assert len(script.requests("/targeted/own")) == 1
    # CDN-Cache-Control decides too (after the gateway's own field), and is passed on.
    script.set("/targeted/cdn", headers={"cache-control": "no-store",
                                         "cdn-cache-control": "max-age=60"})
    assert (yield cache_results(gw, "/targeted/cdn")) == ["MISS", "HIT"]
    response, _ = yield get(gw, "/targeted/cdn")
    assert field(response, b"cdn-cache-control") == "max-age=60"
    # A targeted field that does not parse is ignored: Cache-Control decides.
    script.set("/targeted/bad", headers={"cache-control": "no-store",
                                         "twistgate-cache-control": "Max-Age=60"})
    assert (yield cache_results(gw, "/targeted/bad")) == ["MISS", "MISS"]


@pytest_twisted.inlineCallbacks
def test_heuristic_freshness_applies_with_last_modified_only(env):
    gw, script, _ = env
    script.set("/strict/heuristic", last_modified=http_date(-30 * 86400))
    assert (yield cache_results(gw, "/strict/heuristic")) == ["MISS", "HIT"]


@pytest_twisted.inlineCallbacks
def test_without_freshness_the_ttl_route_reuses_and_the_strict_route_never_does(env):
    gw, script, _ = env
    script.set("/ttl/plain", body=b"plain")
    script.set("/strict/plain", body=b"plain")
    assert (yield cache_results(gw, "/ttl/plain", 3)) == ["MISS", "HIT", "HIT"]
    assert (yield cache_results(gw, "/strict/plain", 3)) == ["MISS", "MISS", "MISS"]
    assert len(script.requests("/strict/plain")) == 3


@pytest_twisted.inlineCallbacks
def test_unusual_statuses_and_fields_pass_verbatim(env):
    gw, script, _ = env
    script.set("/strict/odd", code=299, phrase=b"Rather Odd",
               headers={"cache-control": "max-age=60", "x-odd": "yes"}, body=b"odd")
    yield get(gw, "/strict/odd")
    response, body = yield get(gw, "/strict/odd")
    assert (response.code, response.phrase, body) == (299, b"Rather Odd", b"odd")
    assert (field(response, b"x-odd"), field(response, b"x-cache")) == ("yes", "HIT")


# --- Vary ---------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_vary_selects_by_normalised_request_fields_and_star_never_matches(env):
    gw, script, _ = env
    script.set("/strict/vary", headers={"cache-control": "max-age=60", "vary": "Accept-Encoding"})
    assert (yield cache_results(gw, "/strict/vary", 1, {"Accept-Encoding": "gzip, br"})) == [
        "MISS"]
    assert (yield cache_results(gw, "/strict/vary", 1, {"Accept-Encoding": "BR,gzip"})) == [
        "HIT"]
    assert (yield cache_results(gw, "/strict/vary", 1, {"Accept-Encoding": "identity"})) == [
        "MISS"]
    script.set("/strict/varystar", headers={"cache-control": "max-age=60", "vary": "*"})
    assert (yield cache_results(gw, "/strict/varystar")) == ["MISS", "MISS"]


# --- request directives ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_only_if_cached_answers_504_json_without_the_upstream(env):
    gw, script, _ = env
    script.set("/strict/oic", headers={"cache-control": "max-age=60"})
    response, body = yield get(gw, "/strict/oic", {"Cache-Control": "only-if-cached"})
    assert response.code == 504 and json.loads(body)["status"] == 504
    assert script.requests("/strict/oic") == []
    yield get(gw, "/strict/oic")
    response, _ = yield get(gw, "/strict/oic", {"Cache-Control": "only-if-cached"})
    assert (response.code, field(response, b"x-cache")) == (200, "HIT")


@pytest_twisted.inlineCallbacks
def test_max_stale_takes_a_stale_response_without_the_upstream(env):
    gw, script, _ = env
    script.set("/strict/maxstale", headers={"cache-control": "max-age=60", "age": "90"})
    yield get(gw, "/strict/maxstale")
    response, _ = yield get(gw, "/strict/maxstale", {"Cache-Control": "max-stale=60"})
    assert field(response, b"x-cache") == "STALE"
    assert len(script.requests("/strict/maxstale")) == 1


@pytest_twisted.inlineCallbacks
def test_request_no_cache_and_max_age_0_make_the_cache_validate(env):
    gw, script, _ = env
    script.set("/strict/nocache", headers={"cache-control": "max-age=60"}, etag='"n1"')
    yield get(gw, "/strict/nocache")
    for directive in ("no-cache", "max-age=0"):
        response, _ = yield get(gw, "/strict/nocache", {"Cache-Control": directive})
        assert field(response, b"x-cache") == "REVALIDATED"
        assert script.requests("/strict/nocache")[-1]["headers"]["if-none-match"] == '"n1"'


# --- validation ----------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_stale_response_is_revalidated_and_a_304_refreshes_its_fields(env):
    gw, script, _ = env
    # Age 100 with max-age 60: stored stale, so the next request validates it.
    script.set("/strict/etag", headers={"cache-control": "max-age=60", "age": "100",
                                        "x-version": "1"},
               body=b"the body", etag='"e1"', refresh={"x-version": "2"})
    yield get(gw, "/strict/etag")
    response, body = yield get(gw, "/strict/etag")
    seen = script.requests("/strict/etag")
    assert seen[-1]["headers"]["if-none-match"] == '"e1"'
    assert (response.code, body) == (200, b"the body")
    assert field(response, b"x-cache") == "REVALIDATED"
    assert field(response, b"x-version") == "2"
    assert response.length == 8  # twisted's client keeps Content-Length as .length
    response, body = yield get(gw, "/strict/etag")  # refreshed: fresh again
    assert (field(response, b"x-cache"), body) == ("HIT", b"the body")
    assert len(seen) == 2


@pytest_twisted.inlineCallbacks
def test_last_modified_is_revalidated_with_if_modified_since(env):
    gw, script, _ = env
    modified = http_date(-3600)
    script.set("/strict/lm", headers={"cache-control": "max-age=60", "age": "100"},
               last_modified=modified)
    yield get(gw, "/strict/lm")
    response, _ = yield get(gw, "/strict/lm")
    assert script.requests("/strict/lm")[-1]["headers"]["if-modified-since"] == modified
    assert field(response, b"x-cache") == "REVALIDATED"


@pytest_twisted.inlineCallbacks
def test_an_error_on_revalidation_is_passed_on_unless_stale_if_error_allows_stale(env):
    gw, script, _ = env
    for name, directives, expected in [
            ("sie", "max-age=60, stale-if-error=600", (200, "STALE")),
            ("mustrevalidate", "max-age=60, must-revalidate, stale-if-error=600", (500, "MISS"))]:
        path = "/strict/" + name
        script.set(path, headers={"cache-control": directives, "age": "100"}, etag='"x"')
        yield get(gw, path)
        script.set(path, code=500, body=b"broken")
        response, _ = yield get(gw, path)
        assert (response.code, field(response, b"x-cache")) == expected, name


@pytest_twisted.inlineCallbacks
def test_the_clients_own_if_none_match_is_answered_from_a_fresh_response(env):
    gw, script, _ = env
    script.set("/strict/client304", headers={"cache-control": "max-age=60"}, etag='"c1"')
    yield get(gw, "/strict/client304")
    response, body = yield get(gw, "/strict/client304", {"If-None-Match": 'W/"c1"'})
    assert (response.code, body, field(response, b"x-cache")) == (304, b"", "HIT")
    assert field(response, b"etag") == '"c1"'
    response, _ = yield get(gw, "/strict/client304", {"If-None-Match": '"other"'})
    assert response.code == 200
    assert len(script.requests("/strict/client304")) == 1


# --- invalidation, HEAD, purge ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_post_invalidates_its_url_and_location(env):
    gw, script, _ = env
    script.set("/strict/items", headers={"cache-control": "max-age=60"})
    script.set("/strict/items/9", headers={"cache-control": "max-age=60"})
    for path in ("/strict/items", "/strict/items/9"):
        assert (yield cache_results(gw, path)) == ["MISS", "HIT"]
    script.answers["/strict/items"].code = 201
    script.answers["/strict/items"].headers["location"] = "/strict/items/9"
    response, _ = yield get(gw, "/strict/items", method="POST")
    assert response.code == 201
    script.answers["/strict/items"].code = 200
    for path in ("/strict/items", "/strict/items/9"):
        assert (yield cache_results(gw, path, 1)) == ["MISS"], path


@pytest_twisted.inlineCallbacks
def test_head_is_answered_from_a_stored_get(env):
    gw, script, _ = env
    script.set("/strict/head", headers={"cache-control": "max-age=60"}, body=b"12345")
    yield get(gw, "/strict/head")
    response, body = yield get(gw, "/strict/head", method="HEAD")
    assert (response.code, body, field(response, b"x-cache")) == (200, b"", "HIT")
    assert field(response, b"content-length") == "5"
    assert [seen["method"] for seen in script.requests("/strict/head")] == ["GET"]


@pytest_twisted.inlineCallbacks
def test_the_admin_purge_drops_responses_under_a_prefix(env):
    gw, script, status = env
    for path in ("/strict/purge/a", "/strict/purge/b", "/strict/purgeless"):
        script.set(path, headers={"cache-control": "max-age=60"})
        yield get(gw, path)
    response = yield treq.post(status + "/admin/cache/purge?prefix=/strict/purge")
    assert json.loads((yield response.content())) == {"purged": 2}
    assert (yield cache_results(gw, "/strict/purge/a", 1)) == ["MISS"]
    assert (yield cache_results(gw, "/strict/purgeless", 1)) == ["HIT"]


# --- coalescing and authentication --------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_twenty_concurrent_misses_make_one_upstream_request(env):
    gw, script, _ = env
    script.set("/strict/crowd", headers={"cache-control": "max-age=60"}, body=b"x" * 20000,
               delay=0.5)
    results = yield DeferredList([get(gw, "/strict/crowd") for _ in range(20)],
                                 consumeErrors=True)
    assert all(ok for ok, _ in results)
    assert [body for _, (_, body) in results] == [b"x" * 20000] * 20
    assert len(script.requests("/strict/crowd")) == 1
    labels = sorted(field(response, b"x-cache") for _, (response, _) in results)
    assert labels == ["HIT"] * 19 + ["MISS"]


@pytest_twisted.inlineCallbacks
def test_two_subjects_never_see_each_others_answer(env):
    gw, script, _ = env
    # The upstream answers with the X-Forwarded-For-independent thing that differs per user:
    # which token it saw.
    script.set("/user/me", headers={"cache-control": "max-age=60"})
    bodies = {}
    for sub in ("alice", "bob", "alice", "bob"):
        auth = "Bearer " + token(sub)
        script.answers["/user/me"].body = json.dumps({"me": sub}).encode()
        response, body = yield get(gw, "/user/me", {"Authorization": auth})
        assert json.loads(body) == {"me": sub}
        bodies.setdefault(sub, []).append(field(response, b"x-cache"))
    assert bodies == {"alice": ["MISS", "HIT"], "bob": ["MISS", "HIT"]}
    response, _ = yield get(gw, "/user/me")
    assert response.code == 401  # the jwt filter, before the cache


@pytest_twisted.inlineCallbacks
def test_scope_shared_shares_an_authenticated_answer_only_when_public(env):
    gw, script, _ = env
    script.set("/shared/plain", headers={"cache-control": "max-age=60"})
    script.set("/shared/public", headers={"cache-control": "public, max-age=60"})
    alice = {"Authorization": "Bearer " + token("alice")}
    bob = {"Authorization": "Bearer " + token("bob")}
    assert (yield cache_results(gw, "/shared/plain", 1, alice)) == ["MISS"]
    assert (yield cache_results(gw, "/shared/plain", 1, alice)) == ["MISS"]
    assert (yield cache_results(gw, "/shared/public", 1, alice)) == ["MISS"]
    assert (yield cache_results(gw, "/shared/public", 1, bob)) == ["HIT"]


# --- more rules, one path each ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_statuses_need_heuristic_cacheability_or_explicit_freshness(env):
    gw, script, _ = env
    script.set("/ttl/notfound", code=404, body=b"none")
    assert (yield cache_results(gw, "/ttl/notfound")) == ["MISS", "HIT"]
    script.set("/ttl/found", code=302, headers={"location": "/elsewhere"})
    assert (yield cache_results(gw, "/ttl/found")) == ["MISS", "MISS"]
    script.set("/ttl/found60", code=302, headers={"location": "/x", "cache-control": "max-age=60"})
    assert (yield cache_results(gw, "/ttl/found60")) == ["MISS", "HIT"]


@pytest_twisted.inlineCallbacks
def test_a_range_is_answered_206_from_a_stored_response_and_416_when_unsatisfiable(env):
    gw, script, _ = env
    script.set("/strict/range", headers={"cache-control": "max-age=60"},
               body=b"0123456789abcdef")
    yield get(gw, "/strict/range")
    response, body = yield get(gw, "/strict/range", {"Range": "bytes=0-4"})
    assert (response.code, body, field(response, b"x-cache")) == (206, b"01234", "HIT")
    assert field(response, b"content-range") == "bytes 0-4/16"
    assert response.length == 5  # twisted's client keeps Content-Length as .length
    response, body = yield get(gw, "/strict/range", {"Range": "bytes=16-"})
    assert (response.code, field(response, b"content-range")) == (416, "bytes */16")
    assert json.loads(body)["status"] == 416
    assert len(script.requests("/strict/range")) == 1


@pytest_twisted.inlineCallbacks
def test_a_range_miss_fetches_the_whole_response_and_stores_it(env):
    gw, script, _ = env
    script.set("/strict/rangemiss", headers={"cache-control": "max-age=60", "etag": '"r1"'},
               body=b"0123456789")
    response, body = yield get(gw, "/strict/rangemiss", {"Range": "bytes=-3",
                                                         "If-Range": '"r1"'})
    assert (response.code, body, field(response, b"x-cache")) == (206, b"789", "MISS")
    assert field(response, b"content-range") == "bytes 7-9/10"
    (seen,) = script.requests("/strict/rangemiss")
    assert "range" not in seen["headers"] and "if-range" not in seen["headers"]
    response, body = yield get(gw, "/strict/rangemiss")
    assert (response.code, body, field(response, b"x-cache")) == (200, b"0123456789", "HIT")
    response, body = yield get(gw, "/strict/rangemiss", {"Range": "bytes=0-1",
                                                         "If-Range": '"old"'})
    assert (response.code, body) == (200, b"0123456789")  # If-Range did not match: the whole
    assert len(script.requests("/strict/rangemiss")) == 1


@pytest_twisted.inlineCallbacks
def test_a_206_from_the_upstream_is_passed_on_and_not_stored(env):
    gw, script, _ = env
    script.set("/ttl/range", code=206, headers={"content-range": "bytes 2000000-2000001/3000000"},
               body=b"ab")
    # A range past max_entry_size (1MB) could not come from a stored response: passed on.
    results = yield cache_results(gw, "/ttl/range", 2, {"Range": "bytes=2000000-2000001"})
    assert results == ["BYPASS", "BYPASS"]
    assert [seen["headers"]["range"] for seen in script.requests("/ttl/range")] == [
        "bytes=2000000-2000001"] * 2


@pytest_twisted.inlineCallbacks
def test_set_cookie_is_stored_when_public_says_so(env):
    gw, script, _ = env
    script.set("/strict/cookiepublic", headers={"cache-control": "public, max-age=60",
                                                "set-cookie": "ab=b"})
    yield get(gw, "/strict/cookiepublic")
    response, _ = yield get(gw, "/strict/cookiepublic")
    assert (field(response, b"x-cache"), field(response, b"set-cookie")) == ("HIT", "ab=b")


@pytest_twisted.inlineCallbacks
def test_must_understand_lets_an_understood_status_be_stored_despite_no_store(env):
    gw, script, _ = env
    script.set("/strict/understood", headers={"cache-control":
                                              "must-understand, no-store, max-age=60"})
    assert (yield cache_results(gw, "/strict/understood")) == ["MISS", "HIT"]


@pytest_twisted.inlineCallbacks
def test_a_request_with_no_store_stores_nothing(env):
    gw, script, _ = env
    script.set("/strict/reqnostore", headers={"cache-control": "max-age=60"})
    yield get(gw, "/strict/reqnostore", {"Cache-Control": "no-store"})
    assert (yield cache_results(gw, "/strict/reqnostore", 1)) == ["MISS"]


@pytest_twisted.inlineCallbacks
def test_the_origin_and_the_query_are_part_of_the_key(env):
    gw, script, _ = env
    script.set("/strict/keyed", headers={"cache-control": "max-age=60"})
    yield get(gw, "/strict/keyed?page=1")
    assert (yield cache_results(gw, "/strict/keyed?page=1", 1)) == ["HIT"]
    assert (yield cache_results(gw, "/strict/keyed?page=2", 1)) == ["MISS"]
    assert (yield cache_results(gw, "/strict/keyed?page=1", 1, {"Host": "other.example"})) == [
        "MISS"]


@pytest_twisted.inlineCallbacks
def test_request_max_age_and_min_fresh_ask_for_younger_or_fresher_answers(env):
    gw, script, _ = env
    script.set("/strict/young", headers={"cache-control": "max-age=600", "age": "30"})
    yield get(gw, "/strict/young")
    assert (yield cache_results(gw, "/strict/young", 1, {"Cache-Control": "max-age=60"})) == [
        "HIT"]
    assert (yield cache_results(gw, "/strict/young", 1, {"Cache-Control": "max-age=10"})) == [
        "MISS"]
    script.set("/strict/freshleft", headers={"cache-control": "max-age=60"})
    yield get(gw, "/strict/freshleft")
    assert (yield cache_results(gw, "/strict/freshleft", 1,
                                {"Cache-Control": "min-fresh=30"})) == ["HIT"]
    assert (yield cache_results(gw, "/strict/freshleft", 1,
                                {"Cache-Control": "min-fresh=90"})) == ["MISS"]


@pytest_twisted.inlineCallbacks
def test_pragma_no_cache_counts_without_cache_control_and_unknown_directives_are_ignored(env):
    gw, script, _ = env
    script.set("/strict/pragma", headers={"cache-control": "max-age=60"})
    yield get(gw, "/strict/pragma")
    assert (yield cache_results(gw, "/strict/pragma", 1, {"Pragma": "no-cache"})) == ["MISS"]
    assert (yield cache_results(gw, "/strict/pragma", 1,
                                {"Pragma": "no-cache", "Cache-Control": "x-unknown"})) == ["HIT"]


@pytest_twisted.inlineCallbacks
def test_must_revalidate_refuses_max_stale(env):
    gw, script, _ = env
    script.set("/strict/mr", headers={"cache-control": "max-age=60, must-revalidate",
                                      "age": "90"})
    yield get(gw, "/strict/mr")
    response, _ = yield get(gw, "/strict/mr", {"Cache-Control": "max-stale"})
    assert field(response, b"x-cache") == "MISS"
    assert len(script.requests("/strict/mr")) == 2


@pytest_twisted.inlineCallbacks
def test_a_no_cache_response_is_revalidated_on_every_use(env):
    gw, script, _ = env
    script.set("/strict/nocacheresp", headers={"cache-control": "no-cache, max-age=600"},
               etag='"nc"')
    yield get(gw, "/strict/nocacheresp")
    assert (yield cache_results(gw, "/strict/nocacheresp")) == ["REVALIDATED", "REVALIDATED"]
    assert [seen["headers"].get("if-none-match")
            for seen in script.requests("/strict/nocacheresp")] == [None, '"nc"', '"nc"']


@pytest_twisted.inlineCallbacks
def test_a_304_that_says_no_store_drops_the_stored_response(env):
    gw, script, _ = env
    script.set("/strict/dropped", headers={"cache-control": "max-age=60", "age": "100"},
               etag='"d"', refresh={"cache-control": "no-store"})
    yield get(gw, "/strict/dropped")
    response, body = yield get(gw, "/strict/dropped")
    assert (response.code, field(response, b"x-cache")) == (200, "REVALIDATED")
    assert (yield cache_results(gw, "/strict/dropped", 1)) == ["MISS"]  # nothing stored now


@pytest_twisted.inlineCallbacks
def test_the_clients_if_modified_since_is_answered_from_a_fresh_response(env):
    gw, script, _ = env
    modified = http_date(-3600)
    script.set("/strict/ims", headers={"cache-control": "max-age=60"}, last_modified=modified)
    yield get(gw, "/strict/ims")
    response, _ = yield get(gw, "/strict/ims", {"If-Modified-Since": http_date(-60)})
    assert (response.code, field(response, b"x-cache")) == (304, "HIT")
    response, _ = yield get(gw, "/strict/ims", {"If-Modified-Since": http_date(-7200)})
    assert response.code == 200
    assert len(script.requests("/strict/ims")) == 1


@pytest_twisted.inlineCallbacks
def test_the_clients_conditional_on_a_stale_response_is_answered_after_the_cache_validates(env):
    gw, script, _ = env
    script.set("/strict/both", headers={"cache-control": "max-age=60", "age": "100"},
               etag='"b1"')
    yield get(gw, "/strict/both")
    response, body = yield get(gw, "/strict/both", {"If-None-Match": '"b1"'})
    assert script.requests("/strict/both")[-1]["headers"]["if-none-match"] == '"b1"'
    assert (response.code, body, field(response, b"x-cache")) == (304, b"", "REVALIDATED")


@pytest_twisted.inlineCallbacks
def test_a_conditional_request_with_nothing_stored_goes_upstream_untouched(env):
    gw, script, _ = env
    script.set("/strict/passcond", headers={"cache-control": "max-age=60"}, etag='"p"')
    response, _ = yield get(gw, "/strict/passcond", {"If-None-Match": '"p"'})
    assert (response.code, field(response, b"x-cache")) == (304, "MISS")
    assert script.requests("/strict/passcond")[0]["headers"]["if-none-match"] == '"p"'


@pytest_twisted.inlineCallbacks
def test_a_head_that_misses_goes_upstream_as_head(env):
    gw, script, _ = env
    script.set("/strict/headmiss", headers={"cache-control": "max-age=60"})
    response, _ = yield get(gw, "/strict/headmiss", method="HEAD")
    assert field(response, b"x-cache") == "MISS"
    assert [seen["method"] for seen in script.requests("/strict/headmiss")] == ["HEAD"]
    assert (yield cache_results(gw, "/strict/headmiss", 1)) == ["MISS"]  # the HEAD stored nothing


@pytest_twisted.inlineCallbacks
def test_an_unsafe_method_invalidates_for_every_subject(env):
    gw, script, _ = env
    script.set("/user/profile", headers={"cache-control": "max-age=60"})
    alice = {"Authorization": "Bearer " + token("alice")}
    bob = {"Authorization": "Bearer " + token("bob")}
    for headers in (alice, bob):
        assert (yield cache_results(gw, "/user/profile", 2, headers)) == ["MISS", "HIT"]
    response, _ = yield get(gw, "/user/profile", alice, method="PUT")
    assert response.code == 200
    for headers in (alice, bob):
        assert (yield cache_results(gw, "/user/profile", 1, headers)) == ["MISS"]


@pytest_twisted.inlineCallbacks
def test_the_status_figures_count_cache_results(env):
    gw, script, status = env
    script.set("/strict/counted", headers={"cache-control": "max-age=60"})
    assert (yield cache_results(gw, "/strict/counted")) == ["MISS", "HIT"]
    response = yield treq.get(status + "/status.json")
    figures = json.loads((yield response.content()))
    assert figures["cache"]["hits"] > 0 and figures["cache"]["results"]["MISS"] > 0
