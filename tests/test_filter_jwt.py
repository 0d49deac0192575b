"""The jwt filter in memory: an injected clock, a fake next, StubTreq for the JWKS endpoint."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from twistgate.config import SectionError, parse_config
from twistgate.exchange import Exchange, Reply
from twistgate.filters import FilterServices, IFilter, IFilterFactory, filter_factories
from twistgate.filters.jwt.filter import JWKS_MIN_REFETCH, JWTFilter, JWTFilterFactory

SECRET = "s3cret-" * 11  # 66 bytes: long enough for HS512 (RFC 7518 §3.2)
NOW = 1_700_000_000.0

factory = JWTFilterFactory()


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def settings(**keys):
    return factory.validate({k: str(v) for k, v in keys.items()})


def problems(**keys):
    with pytest.raises(SectionError) as caught:
        settings(**keys)
    return caught.value.problems


def make_filter(clock=None, client=None, **keys):
    keys.setdefault("algorithms", "HS256")
    if not {"secret", "public_key", "jwks_url"} & set(keys):
        keys["secret"] = SECRET
    clock = clock or clock_at(NOW)
    return JWTFilter("auth", settings(**keys), clock, client)


def clock_at(when):
    clock = Clock()
    clock.advance(when)
    return clock


def token(claims=None, key=SECRET, algorithm="HS256", headers=None, **extra):
    payload = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 3600}
    payload.update(claims or {})
    payload.update(extra)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def exchange_with(authorization=None, extra_headers=None):
    request = DummyRequest([b"api"])
    headers = Headers({b"host": [b"gw.example"]})
    if authorization is not None:
        headers.setRawHeaders(b"authorization", [authorization.encode("latin-1")])
    for name, value in (extra_headers or []):
        headers.addRawHeader(name, value)
    return Exchange(request, None, b"GET", b"/api/x", b"/api/x", headers, "192.0.2.1",
                    "192.0.2.1", b"rid-1", None)


class Upstream:
    """A fake rest of the chain: records what it was given and answers 200."""

    def __init__(self):
        self.seen = []

    def __call__(self, exchange):
        self.seen.append(exchange)
        return succeed(Reply(200, b"OK", Headers(), b"upstream"))


def run(the_filter, exchange):
    """Run one exchange; returns (reply, upstream)."""
    upstream = Upstream()
    results = []
    the_filter.handle(exchange, upstream).addBoth(results.append)
    assert results, "the filter did not answer synchronously"
    return results[0], upstream


def bearer(value):
    return "Bearer " + value


def assert_refused(reply, upstream, status=401, error="invalid_token", description=None):
    assert isinstance(reply, Reply), reply
    assert reply.code == status
    assert upstream.seen == []
    assert reply.headers.getRawHeaders(b"content-type") == [b"application/json"]
    body = json.loads(reply.body)
    assert body["status"] == status
    challenge = reply.headers.getRawHeaders(b"www-authenticate")[0].decode()
    assert challenge.startswith('Bearer realm="twistgate"')
    assert f'error="{error}"' in challenge
    if description is not None:
        assert f'error_description="{description}"' in challenge
    return body


# --- contract -------------------------------------------------------------------------------


def test_the_factory_and_the_filter_provide_their_interfaces():
    assert verifyObject(IFilterFactory, factory)
    the_filter = factory.build("auth", settings(secret=SECRET, algorithms="HS256"),
                               FilterServices(Clock(), None, {}, None))
    assert verifyObject(IFilter, the_filter)
    assert the_filter.name == "auth"
    assert the_filter.authenticates is True


def test_the_plugin_is_found_under_use_jwt():
    assert isinstance(filter_factories()["jwt"], JWTFilterFactory)


def test_a_gw_ini_with_a_jwt_section_loads_through_the_config():
    config = parse_config(
        f"""
        [gateway]
        filters = auth
        [filter:auth]
        use = jwt
        secret = {SECRET}
        algorithms = HS256
        forward_claims = sub:X-User-Id
        [route:r]
        prefix = /r
        upstream = http://127.0.0.1:1
        """.replace("        ", ""),
        filter_factories={"jwt": factory.validate},
    )
    assert config.filters["auth"].settings.forward_claims == (("sub", "X-User-Id"),)


# --- HS256 and the 401s ---------------------------------------------------------------------


def test_a_valid_hs256_token_passes_with_claims_and_subject_in_the_context():
    reply, upstream = run(make_filter(), exchange_with(bearer(token(role="admin"))))
    assert reply.code == 200 and len(upstream.seen) == 1
    context = upstream.seen[0].context
    assert context["subject"] == "alice"
    assert context["claims"]["role"] == "admin" and context["claims"]["sub"] == "alice"
    # the token itself still goes upstream by default
    assert upstream.seen[0].headers.hasHeader(b"authorization")


def test_the_bearer_scheme_is_case_insensitive():
    reply, upstream = run(make_filter(), exchange_with("bEaReR " + token()))
    assert reply.code == 200


def test_a_missing_token_gets_a_401_with_a_realm_and_no_error_code():
    reply, upstream = run(make_filter(), exchange_with())
    assert reply.code == 401 and upstream.seen == []
    assert reply.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="twistgate"']
    assert json.loads(reply.body) == {
        "error": "unauthorized", "message": "a bearer token is required", "status": 401}


def test_another_authorization_scheme_counts_as_no_token():
    reply, upstream = run(make_filter(), exchange_with("Basic YWxpY2U6cHc="))
    assert reply.code == 401 and upstream.seen == []
    assert reply.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="twistgate"']


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b",
                                   "Bearer a b c", "Bearer ....", "Bearer e30.e30.!!!"])
def test_a_malformed_token_gets_a_401_invalid_token(value):
    reply, upstream = run(make_filter(), exchange_with(value))
    assert_refused(reply, upstream)


def test_several_authorization_headers_get_a_401():
    exchange = exchange_with(bearer(token()))
    exchange.headers.addRawHeader(b"authorization", bearer(token()).encode())
    assert_refused(*run(make_filter(), exchange))


def test_a_bad_signature_gets_a_401():
    forged = token(key="another-secret" * 5)
    body = assert_refused(*run(make_filter(), exchange_with(bearer(forged))),
                          description="signature verification failed")
    assert "signature" in body["message"]


def test_a_tampered_payload_gets_a_401():
    header, payload, signature = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "==="))
    claims["sub"] = "mallory"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = ".".join([header, forged_payload, signature])
    assert_refused(*run(make_filter(), exchange_with(bearer(forged))),
                   description="signature verification failed")


def test_an_algorithm_not_listed_gets_a_401():
    hs512 = token(algorithm="HS512")
    assert_refused(*run(make_filter(), exchange_with(bearer(hs512))),
                   description="algorithm not accepted")
    assert run(make_filter(algorithms="HS256 HS512"), exchange_with(bearer(hs512)))[0].code == 200


def test_an_alg_none_token_gets_a_401():
    unsigned = jwt.encode({"sub": "alice", "exp": int(NOW) + 60}, None, algorithm="none")
    assert unsigned.endswith(".")
    assert_refused(*run(make_filter(), exchange_with(bearer(unsigned))),
                   description="algorithm not accepted")
    # also with a signature segment tacked on, and with "None"
    header = base64.urlsafe_b64encode(b'{"alg":"None","typ":"JWT"}').rstrip(b"=").decode()
    payload = unsigned.split(".")[1]
    assert_refused(*run(make_filter(), exchange_with(bearer(f"{header}.{payload}.c2ln"))))


def test_an_expired_token_gets_a_401_only_beyond_the_leeway():
    exp = int(NOW) - 100
    the_token = bearer(token(exp=exp, iat=exp - 60))
    # leeway 30s (default): valid while now < exp + 30
    the_filter = make_filter(clock=clock_at(exp + 29))
    assert run(the_filter, exchange_with(the_token))[0].code == 200
    the_filter = make_filter(clock=clock_at(exp + 30))
    assert_refused(*run(the_filter, exchange_with(the_token)), description="token expired")


def test_the_clock_drives_expiry_within_one_filter():
    clock = clock_at(NOW)
    the_filter = make_filter(clock=clock, leeway="10s")
    the_token = bearer(token(exp=int(NOW) + 60))
    assert run(the_filter, exchange_with(the_token))[0].code == 200
    clock.advance(69.5)
    assert run(the_filter, exchange_with(the_token))[0].code == 200
    clock.advance(0.5)
    assert_refused(*run(the_filter, exchange_with(the_token)), description="token expired")


def test_a_token_not_yet_valid_gets_a_401_only_beyond_the_leeway():
    nbf = int(NOW) + 100
    the_token = bearer(token(nbf=nbf))
    # leeway 30s: valid from nbf - 30 on
    assert run(make_filter(clock=clock_at(nbf - 30)), exchange_with(the_token))[0].code == 200
    assert_refused(*run(make_filter(clock=clock_at(nbf - 31)), exchange_with(the_token)),
                   description="token not yet valid")


def test_leeway_zero_is_exact():
    exp = int(NOW)
    the_token = bearer(token(exp=exp, iat=exp - 10))
    assert run(make_filter(clock=clock_at(exp - 0.001), leeway="0"),
               exchange_with(the_token))[0].code == 200
    assert_refused(*run(make_filter(clock=clock_at(exp), leeway="0"), exchange_with(the_token)))


def test_a_token_issued_in_the_future_gets_a_401():
    the_token = bearer(token(iat=int(NOW) + 3600, exp=int(NOW) + 7200))
    assert_refused(*run(make_filter(), exchange_with(the_token)),
                   description="token issued in the future")


def hs256_by_hand(payload_json: str, key: str = SECRET) -> str:
    """A well-signed HS256 JWS whose payload is exactly C{payload_json}, as an issuer may send."""
    import hashlib
    import hmac

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(payload_json.encode())
    signature = b64(hmac.new(key.encode(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


# JSON texts that are not a JSON number (RFC 7519 §2 NumericDate), though Python's json decodes
# the first four to floats: NaN compares false with every time, so it would never expire.
NOT_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "null", '"1700003600"', "true",
               "false", "[1]", "{}"]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_time_claim_that_is_not_a_json_number_gets_a_401(claim, value):
    times = {"sub": '"alice"', "iat": str(int(NOW)), "exp": str(int(NOW) + 3600)}
    times[claim] = value
    payload = "{" + ",".join(f'"{k}":{v}' for k, v in times.items()) + "}"
    body = assert_refused(*run(make_filter(), exchange_with(bearer(hs256_by_hand(payload)))),
                          description="malformed token")
    assert claim in body["message"]
    # the same token with a number there passes: it is the value that is refused
    times[claim] = str(int(NOW))
    payload = "{" + ",".join(f'"{k}":{v}' for k, v in times.items()) + "}"
    assert run(make_filter(), exchange_with(bearer(hs256_by_hand(payload))))[0].code == 200


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), None, "soon", True])
def test_pyjwt_encoded_non_numbers_get_a_401(claim, value):
    payload = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 3600, claim: value}
    the_token = jwt.encode(payload, SECRET, algorithm="HS256")  # NaN/Infinity as json writes them
    assert_refused(*run(make_filter(), exchange_with(bearer(the_token))),
                   description="malformed token")


def test_time_claims_that_are_numbers_pass_ints_and_floats_alike():
    for claims in ({"exp": int(NOW) + 60, "nbf": int(NOW) - 60, "iat": int(NOW) - 60},
                   {"exp": NOW + 60.5, "nbf": NOW - 0.25, "iat": NOW - 0.25},
                   {"exp": 10 ** 30}):  # far future, but a number
        assert run(make_filter(), exchange_with(bearer(token(claims))))[0].code == 200


def test_a_token_without_exp_passes_unless_exp_is_required():
    the_token = bearer(token(exp=None))
    assert run(make_filter(), exchange_with(the_token))[0].code == 200
    reply, upstream = run(make_filter(required_claims="exp"), exchange_with(the_token))
    assert_refused(reply, upstream, status=403, error="insufficient_scope")
    assert "no 'exp' claim" in json.loads(reply.body)["message"]


def test_a_verified_token_is_remembered_but_its_times_are_checked_every_time(monkeypatch):
    import twistgate.filters.jwt.filter as jwt_auth

    calls = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt_auth.jwt, "decode", lambda *a, **k: calls.append(1) or real_decode(
        *a, **k))
    clock = clock_at(NOW)
    the_filter = make_filter(clock=clock)
    the_token = bearer(token(exp=int(NOW) + 10))
    for _ in range(3):
        assert run(the_filter, exchange_with(the_token))[0].code == 200
    assert len(calls) == 1
    clock.advance(40)
    assert_refused(*run(the_filter, exchange_with(the_token)), description="token expired")


def test_a_later_filter_changing_the_claims_does_not_change_the_remembered_ones():
    the_filter = make_filter()
    the_token = bearer(token())
    reply, upstream = run(the_filter, exchange_with(the_token))
    upstream.seen[0].context["claims"]["sub"] = "mallory"
    reply, upstream = run(the_filter, exchange_with(the_token))
    assert upstream.seen[0].context["claims"]["sub"] == "alice"


def test_the_remembered_tokens_are_bounded(monkeypatch):
    import twistgate.filters.jwt.filter as jwt_auth

    monkeypatch.setattr(jwt_auth, "VERIFIED_TOKENS", 3)
    the_filter = make_filter()
    for n in range(10):
        assert run(the_filter, exchange_with(bearer(token(n=n))))[0].code == 200
    assert len(the_filter._verified) == 3


# --- the 403s -------------------------------------------------------------------------------


def test_a_wrong_issuer_gets_a_403():
    the_filter = make_filter(issuer="https://idp.example")
    ok = bearer(token(iss="https://idp.example"))
    assert run(the_filter, exchange_with(ok))[0].code == 200
    for claims in ({"iss": "https://evil.example"}, {}):
        body = assert_refused(*run(the_filter, exchange_with(bearer(token(claims)))),
                              status=403, error="insufficient_scope",
                              description="token issuer not accepted")
        assert body["error"] == "forbidden"


def test_a_wrong_audience_gets_a_403():
    the_filter = make_filter(audience="orders billing")
    for aud in ("orders", ["x", "billing"]):
        assert run(the_filter, exchange_with(bearer(token(aud=aud))))[0].code == 200
    for claims in ({"aud": "users"}, {"aud": ["users", "x"]}, {}, {"aud": 7}):
        assert_refused(*run(the_filter, exchange_with(bearer(token(claims)))), status=403,
                       error="insufficient_scope", description="token audience not accepted")


def test_an_expired_token_with_a_wrong_issuer_is_a_401_not_a_403():
    the_filter = make_filter(issuer="https://idp.example")
    the_token = bearer(token(iss="other", exp=int(NOW) - 3600, iat=int(NOW) - 7200))
    assert_refused(*run(the_filter, exchange_with(the_token)), status=401)


def test_a_bad_signature_with_a_wrong_issuer_is_a_401_not_a_403():
    the_filter = make_filter(issuer="https://idp.example")
    the_token = bearer(token(iss="other", key="x" * 64))
    assert_refused(*run(the_filter, exchange_with(the_token)), status=401)


def test_the_realm_is_configurable():
    reply, _ = run(make_filter(realm="api"), exchange_with())
    assert reply.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="api"']


# --- asymmetric keys and the algorithm-confusion attack -------------------------------------


def test_rs256_with_a_public_key_file_passes(tmp_path, rsa_key):
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    the_filter = make_filter(public_key=path, algorithms="RS256")
    assert run(the_filter, exchange_with(bearer(token(key=rsa_key, algorithm="RS256"))))[
        0].code == 200
    # and another RSA key's signature does not
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_refused(*run(the_filter, exchange_with(bearer(token(key=other, algorithm="RS256")))),
                   description="signature verification failed")


def test_an_hs256_token_signed_with_the_public_key_pem_is_refused(tmp_path, rsa_key):
    pem = public_pem(rsa_key)
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    # The classic attack: the public key's PEM bytes used as the HMAC secret. PyJWT refuses to
    # sign with a PEM as HMAC key, so the token is made by hand, exactly as an attacker would.
    import hashlib
    import hmac

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(
        json.dumps({"sub": "mallory", "exp": int(NOW) + 60}).encode())
    signature = b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
    forged = (signing_input + b"." + signature).decode()
    for algorithms in ("RS256", "RS256 PS256 RS512"):
        the_filter = make_filter(public_key=path, algorithms=algorithms)
        assert_refused(*run(the_filter, exchange_with(bearer(forged))),
                       description="algorithm not accepted")


def test_es256_with_a_public_key_passes(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(public_pem(key))
    the_filter = make_filter(public_key=path, algorithms="ES256")
    assert run(the_filter, exchange_with(bearer(token(key=key, algorithm="ES256"))))[0].code == 200


def test_the_public_key_is_parsed_once_not_per_request(tmp_path, rsa_key):
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    the_filter = make_filter(public_key=path, algorithms="RS256")
    path.unlink()  # a filter that read the file per request would now fail
    assert run(the_filter, exchange_with(bearer(token(key=rsa_key, algorithm="RS256"))))[
        0].code == 200


# --- forward_claims -------------------------------------------------------------------------


SPOOFS = [(b"X-User-Id", b"spoof1"), (b"x_user_id", b"spoof2"), (b"X-USER-ID", b"spoof3"),
          (b"X_User-Id", b"spoof4"), (b"x-roles", b"spoof5"), (b"X_ROLES", b"spoof6")]


def forwarded(headers):
    folded = {}
    for name, values in headers.getAllRawHeaders():
        folded.setdefault(name.lower().replace(b"_", b"-"), []).extend(
            (name, value) for value in values)
    return folded


def test_forward_claims_sets_the_headers_and_removes_every_spoofed_spelling():
    the_filter = make_filter(forward_claims="sub:X-User-Id roles:X-Roles uid:X-Uid")
    the_token = bearer(token(roles=["a", "b"], uid=42))
    reply, upstream = run(the_filter, exchange_with(the_token, SPOOFS))
    assert reply.code == 200
    sent = forwarded(upstream.seen[0].headers)
    assert sent[b"x-user-id"] == [(b"X-User-Id", b"alice")]
    assert sent[b"x-roles"] == [(b"X-Roles", b'["a","b"]')]
    assert sent[b"x-uid"] == [(b"X-Uid", b"42")]


def test_a_claim_the_token_lacks_is_not_forwarded_but_spoofs_are_still_removed():
    the_filter = make_filter(forward_claims="sub:X-User-Id roles:X-Roles")
    reply, upstream = run(the_filter, exchange_with(bearer(token()), SPOOFS))
    sent = forwarded(upstream.seen[0].headers)
    assert b"x-roles" not in sent
    assert sent[b"x-user-id"] == [(b"X-User-Id", b"alice")]


def test_spoofed_headers_are_removed_even_when_the_token_is_refused():
    the_filter = make_filter(forward_claims="sub:X-User-Id roles:X-Roles")
    for value in (None, "Bearer junk"):
        exchange = exchange_with(value, SPOOFS)
        reply, _ = run(the_filter, exchange)
        assert reply.code == 401
        assert not any(b"user" in n.lower() or b"roles" in n.lower()
                       for n, _ in exchange.headers.getAllRawHeaders())


def test_claim_values_with_control_characters_are_json_encoded():
    the_filter = make_filter(forward_claims="name:X-Name")
    reply, upstream = run(the_filter, exchange_with(bearer(token(name="a\r\nX-Admin: 1"))))
    assert upstream.seen[0].headers.getRawHeaders(b"x-name") == [b'"a\\r\\nX-Admin: 1"']


def test_namespaced_claims_can_be_forwarded():
    the_filter = make_filter(forward_claims="https://example.com/tenant:X-Tenant")
    the_token = bearer(token({"https://example.com/tenant": "acme"}))
    reply, upstream = run(the_filter, exchange_with(the_token))
    assert upstream.seen[0].headers.getRawHeaders(b"x-tenant") == [b"acme"]


def test_forward_token_no_removes_the_authorization_header():
    reply, upstream = run(make_filter(forward_token="no"), exchange_with(bearer(token())))
    assert reply.code == 200 and not upstream.seen[0].headers.hasHeader(b"authorization")


def test_a_token_without_sub_leaves_no_subject():
    reply, upstream = run(make_filter(), exchange_with(bearer(token(sub=None))))
    assert reply.code == 200
    assert "subject" not in upstream.seen[0].context
    assert "sub" not in upstream.seen[0].context["claims"]


# --- JWKS -----------------------------------------------------------------------------------


def jwk(private_key, kid, alg="RS256"):
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    data.update(kid=kid, use="sig")
    if alg:
        data["alg"] = alg
    return data


class JWKSResource(Resource):
    """A JWKS endpoint: serves C{keys}, counts fetches, can be down or hold its answers."""

    isLeaf = True

    def __init__(self, keys):
        super().__init__()
        self.keys = keys
        self.down = False
        self.hold = False
        self.held = []
        self.fetches = 0

    def render_GET(self, request):
        self.fetches += 1
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        return self.answer(request)

    def answer(self, request):
        if self.down:
            request.setResponseCode(503)
            return b"down"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"keys": self.keys}).encode()

    def release(self, stub):
        held, self.held = self.held, []
        for request in held:
            request.write(self.answer(request))
            request.finish()
        stub.flush()


def jwks_filter(resource, clock=None, **keys):
    keys.setdefault("algorithms", "RS256")
    clock = clock or clock_at(NOW)
    stub = StubTreq(resource)
    return make_filter(clock=clock, client=stub, jwks_url="https://idp.example/jwks", **keys), \
        stub, clock


def rs256(private_key, kid, **claims):
    return bearer(token(claims, key=private_key, algorithm="RS256", headers={"kid": kid}))


def test_jwks_keys_are_fetched_at_start_and_verify_by_kid(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    assert resource.fetches == 1
    reply, upstream = run(the_filter, exchange_with(rs256(rsa_key, "k1")))
    assert reply.code == 200 and upstream.seen[0].context["subject"] == "alice"
    assert resource.fetches == 1  # cached


def test_a_rotated_key_is_picked_up_without_restart(rsa_key, rsa_key2):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    assert run(the_filter, exchange_with(rs256(rsa_key, "k1")))[0].code == 200
    resource.keys = [jwk(rsa_key2, "k2")]
    clock.advance(5)
    assert run(the_filter, exchange_with(rs256(rsa_key2, "k2")))[0].code == 200
    assert resource.fetches == 2
    # the old key is gone from the set: its tokens no longer verify
    assert_refused(*run(the_filter, exchange_with(rs256(rsa_key, "k1"))),
                   description="unknown signing key")


def test_an_unknown_kid_refetches_at_most_once_per_30_seconds(rsa_key, rsa_key2):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    assert_refused(*run(the_filter, exchange_with(rs256(rsa_key2, "nope"))),
                   description="unknown signing key")
    assert resource.fetches == 2
    for _ in range(5):
        clock.advance(5)
        assert_refused(*run(the_filter, exchange_with(rs256(rsa_key2, "other"))))
    assert resource.fetches == 2  # 25 s after the refetch: none more
    resource.keys = [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]
    clock.advance(4.9)
    assert run(the_filter, exchange_with(rs256(rsa_key2, "k2")))[0].code == 401
    assert resource.fetches == 2
    clock.advance(JWKS_MIN_REFETCH - 29.9)  # 30 s since the last refetch
    assert run(the_filter, exchange_with(rs256(rsa_key2, "k2")))[0].code == 200
    assert resource.fetches == 3


def test_a_known_kid_never_refetches(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    forged = rs256(rsa_key, "k1")[:-10] + "AAAAAAAAAA"
    assert_refused(*run(the_filter, exchange_with(forged)))
    assert resource.fetches == 1


def test_a_disallowed_algorithm_never_triggers_a_fetch(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    hs = bearer(token(key=SECRET, algorithm="HS256", headers={"kid": "zzz"}))
    assert_refused(*run(the_filter, exchange_with(hs)), description="algorithm not accepted")
    assert resource.fetches == 1


def test_while_the_jwks_endpoint_is_down_the_last_good_copy_still_verifies(rsa_key, rsa_key2):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource, jwks_refresh="1m")
    resource.down = True
    clock.advance(120)  # the copy is due for a refresh, which fails
    assert run(the_filter, exchange_with(rs256(rsa_key, "k1")))[0].code == 200
    assert resource.fetches == 2
    clock.advance(40)  # an unknown kid: another attempt, which fails too
    assert run(the_filter, exchange_with(rs256(rsa_key2, "k2")))[0].code == 401
    assert resource.fetches == 3
    assert run(the_filter, exchange_with(rs256(rsa_key, "k1", exp=int(NOW) + 9000)))[
        0].code == 200


def test_the_jwks_is_refreshed_in_the_background_when_old(rsa_key, rsa_key2):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource, jwks_refresh="10m")
    clock.advance(599)
    run(the_filter, exchange_with(rs256(rsa_key, "k1")))
    assert resource.fetches == 1
    resource.keys = [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]
    clock.advance(1)
    assert run(the_filter, exchange_with(rs256(rsa_key, "k1")))[0].code == 200
    assert resource.fetches == 2


def test_before_any_good_copy_tokens_get_a_401_not_a_500(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    resource.down = True
    the_filter, stub, clock = jwks_filter(resource)
    body = assert_refused(*run(the_filter, exchange_with(rs256(rsa_key, "k1"))),
                          description="signing keys unavailable")
    assert body["status"] == 401
    assert resource.fetches == 2  # the first token may try once more at once
    clock.advance(10)
    assert_refused(*run(the_filter, exchange_with(rs256(rsa_key, "k1"))))
    assert resource.fetches == 2
    resource.down = False
    clock.advance(20)
    assert run(the_filter, exchange_with(rs256(rsa_key, "k1")))[0].code == 200
    assert resource.fetches == 3


@pytest.mark.parametrize("answer", [b"not json", b"[]", b'{"keys": 7}', b'{"keys": []}',
                                    b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}',
                                    b'{"keys": [{"kty": "RSA", "kid": "k1"}]}'])
def test_an_unusable_jwks_answer_is_a_failed_fetch(answer, rsa_key):
    class Garbage(Resource):
        isLeaf = True

        def render_GET(self, request):
            return answer

    the_filter, stub, clock = jwks_filter(Garbage())
    assert not the_filter.jwks.ready
    assert_refused(*run(the_filter, exchange_with(rs256(rsa_key, "k1"))),
                   description="signing keys unavailable")


def test_a_jwks_answer_over_the_size_limit_is_a_failed_fetch(rsa_key, monkeypatch):
    import twistgate.filters.jwt.jwks as jwks_module

    resource = JWKSResource([jwk(rsa_key, "k1")])
    monkeypatch.setattr(jwks_module, "JWKS_MAX_BYTES", 200)
    the_filter, stub, clock = jwks_filter(resource)
    assert not the_filter.jwks.ready
    monkeypatch.setattr(jwks_module, "JWKS_MAX_BYTES", 10_000)
    clock.advance(30)
    assert run(the_filter, exchange_with(rs256(rsa_key, "k1")))[0].code == 200


def test_a_jwks_fetch_that_never_answers_times_out_on_the_clock(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    resource.hold = True
    the_filter, stub, clock = jwks_filter(resource, jwks_timeout="2s")
    results = []
    the_filter.handle(exchange_with(rs256(rsa_key, "k1")), Upstream()).addBoth(results.append)
    assert results == []  # waiting for the start-up fetch
    clock.advance(2)
    assert results[0].code == 401
    assert not the_filter.jwks.ready


def test_concurrent_requests_needing_a_refetch_share_one_fetch(rsa_key, rsa_key2):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    resource.keys = [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]
    resource.hold = True
    results = []
    upstream = Upstream()
    for _ in range(5):
        the_filter.handle(exchange_with(rs256(rsa_key2, "k2")), upstream).addBoth(results.append)
    assert results == [] and resource.fetches == 2
    resource.release(stub)
    assert [r.code for r in results] == [200] * 5
    assert resource.fetches == 2 and len(upstream.seen) == 5


def test_requests_during_the_start_up_fetch_wait_for_it(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1")])
    resource.hold = True
    the_filter, stub, clock = jwks_filter(resource)
    results = []
    for _ in range(3):
        the_filter.handle(exchange_with(rs256(rsa_key, "k1")), Upstream()).addBoth(results.append)
    assert results == []
    resource.release(stub)
    assert [r.code for r in results] == [200] * 3
    assert resource.fetches == 1


def test_a_jwks_key_declaring_another_alg_does_not_verify(rsa_key):
    resource = JWKSResource([jwk(rsa_key, "k1", alg="RS512")])
    the_filter, stub, clock = jwks_filter(resource, algorithms="RS256 RS512")
    assert_refused(*run(the_filter, exchange_with(rs256(rsa_key, "k1"))),
                   description="the key does not fit the token algorithm")
    rs512 = bearer(token(key=rsa_key, algorithm="RS512", headers={"kid": "k1"}))
    assert run(the_filter, exchange_with(rs512))[0].code == 200


def test_a_token_without_kid_is_tried_against_each_fitting_key(rsa_key, rsa_key2):
    resource = JWKSResource([jwk(rsa_key, "k1", alg=None), jwk(rsa_key2, "k2", alg=None)])
    the_filter, stub, clock = jwks_filter(resource)
    the_token = bearer(token(key=rsa_key2, algorithm="RS256"))
    assert run(the_filter, exchange_with(the_token))[0].code == 200


def test_the_jwks_is_fetched_with_the_http_client_built_on_the_reactor():
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    services = FilterServices(reactor, None, {}, None)
    the_filter = factory.build(
        "auth", settings(jwks_url="http://127.0.0.1:9/jwks", algorithms="RS256"), services)
    assert the_filter.jwks.fetches == 0  # built before the reactor runs: the fetch waits for it
    for hook, args, kwargs in reactor.whenRunningHooks:
        hook(*args, **kwargs)
    assert the_filter.jwks.fetches == 1
    host, port = reactor.tcpClients[0][:2]
    assert (host, port) == ("127.0.0.1", 9)


# --- configuration errors -------------------------------------------------------------------


def test_algorithms_is_required():
    assert ("algorithms", "required: an explicit list such as HS256 or RS256") in problems(
        secret=SECRET)


@pytest.mark.parametrize("listed", ["none", "HS256 none", "NONE"])
def test_none_is_a_config_error(listed):
    found = problems(secret=SECRET, algorithms=listed)
    assert [key for key, _ in found] == ["algorithms"]
    assert "'none' is never accepted" in found[0][1]


def test_an_unknown_algorithm_says_what_was_meant():
    assert problems(secret=SECRET, algorithms="hs256") == [
        ("algorithms", "unknown algorithm 'hs256' (did you mean 'HS256'?)")]


def test_a_key_source_is_required():
    assert ("secret", "one of secret, public_key or jwks_url is required") in problems(
        algorithms="HS256")


def test_two_key_sources_are_an_error(tmp_path, rsa_key):
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    found = problems(secret=SECRET, jwks_url="https://idp.example/jwks", algorithms="HS256")
    assert any(key == "jwks_url" and "only one of" in problem for key, problem in found)
    found = problems(public_key=path, jwks_url="https://idp.example/jwks", algorithms="RS256")
    assert any("only one of" in problem for _, problem in found)


def test_hs_algorithms_with_a_public_key_or_jwks_are_an_error(tmp_path, rsa_key):
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    for source in ({"public_key": path}, {"jwks_url": "https://idp.example/jwks"}):
        found = problems(algorithms="RS256 HS256", **source)
        assert len(found) == 1 and found[0][0] == "algorithms"
        assert "HS256 needs a secret" in found[0][1]


def test_asymmetric_algorithms_with_a_secret_are_an_error():
    found = problems(secret=SECRET, algorithms="HS256 RS256")
    assert found == [("algorithms", "RS256 cannot be verified with a secret: use public_key or "
                                    "jwks_url for them")]


def test_algorithms_must_fit_the_public_key(tmp_path, rsa_key):
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    assert problems(public_key=path, algorithms="RS256 ES256") == [
        ("algorithms", "ES256 cannot be verified with an RSA key")]


def test_a_public_key_that_is_no_key_is_an_error(tmp_path, rsa_key):
    missing = tmp_path / "missing.pem"
    assert problems(public_key=missing, algorithms="RS256")[0][0] == "public_key"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    assert problems(public_key=garbage, algorithms="RS256") == [
        ("public_key", f"'{garbage}' is not a PEM public key or certificate")]
    private = tmp_path / "private.pem"
    private.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    assert "private key" in problems(public_key=private, algorithms="RS256")[0][1]


def test_a_pem_as_secret_is_an_error(rsa_key):
    found = problems(secret=public_pem(rsa_key).decode(), algorithms="HS256")
    assert found[0][0] == "secret" and "PEM" in found[0][1]


@pytest.mark.parametrize("algorithms, length, wanted", [
    ("HS256", 31, 32), ("HS384", 47, 48), ("HS512", 63, 64), ("HS256 HS512", 40, 64)])
def test_an_hmac_secret_shorter_than_the_hash_is_valid_with_a_warning(algorithms, length, wanted):
    longest = algorithms.split()[-1]
    short = settings(secret="k" * length, algorithms=algorithms)  # valid: no SectionError
    assert short.warnings == (("secret", f"{length} bytes: RFC 7518 §3.2 asks for at least "
                                         f"{wanted} with {longest} (as many as its hash output)"),)
    assert settings(secret="k" * wanted, algorithms=algorithms).warnings == ()


def test_the_secret_is_measured_in_utf8_bytes_and_a_public_key_never_warns(tmp_path, rsa_key):
    assert settings(secret="é" * 16, algorithms="HS256").warnings == ()  # 32 bytes, 16 chars
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    assert settings(public_key=path, algorithms="RS256").warnings == ()


def test_a_bad_leeway_is_an_error():
    assert problems(secret=SECRET, algorithms="HS256", leeway="30") == [
        ("leeway", "'30' is not a duration (use 250ms, 30s, 5m, 1h)")]


def test_an_unknown_key_is_an_error_with_a_suggestion():
    assert problems(secret=SECRET, algorithms="HS256", audiance="x") == [
        ("audiance", "unknown key (did you mean 'audience'?)")]
    assert problems(secret=SECRET, algorithms="HS256", colour="x") == [("colour", "unknown key")]


@pytest.mark.parametrize("pairs,expected", [
    ("sub", "'sub' is not claim:Header"),
    ("sub:", "'sub:' is not claim:Header"),
    ("sub:X User", None),
    ("sub:Authorization", "'Authorization' cannot carry a claim"),
    ("sub:X-Id email:x_id", "'x_id' is named twice"),
])
def test_bad_forward_claims_are_errors(pairs, expected):
    found = problems(secret=SECRET, algorithms="HS256", forward_claims=pairs)
    assert found[0][0] == "forward_claims"
    if expected:
        assert found[0][1] == expected


def test_every_problem_is_reported_at_once():
    found = problems(algorithms="none RS999", leeway="soon", jwks_timeout="1s", bogus="1")
    keys = sorted(key for key, _ in found)
    assert keys == ["algorithms", "algorithms", "bogus", "jwks_timeout", "leeway", "secret"]


def test_a_bad_jwks_url_is_an_error():
    assert problems(jwks_url="ftp://x/jwks", algorithms="RS256") == [
        ("jwks_url", "'ftp://x/jwks' is not an http:// or https:// URL")]


def test_a_filter_with_a_pending_jwks_does_not_block_other_work(rsa_key):
    # a sanity check of the Deferred plumbing: the fake next may answer later, too
    resource = JWKSResource([jwk(rsa_key, "k1")])
    the_filter, stub, clock = jwks_filter(resource)
    later = Deferred()
    results = []
    the_filter.handle(exchange_with(rs256(rsa_key, "k1")), lambda exchange: later).addBoth(
        results.append)
    assert results == []
    later.callback(Reply(204, b"No Content", Headers(), b""))
    assert results[0].code == 204


def test_a_relative_public_key_is_read_from_the_config_files_directory(tmp_path):
    from twistgate.config import parse_config
    from twistgate.filters.jwt.filter import JWTFilterFactory

    factory = JWTFilterFactory()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = parse_config(
        "[filter:auth]\nuse = jwt\npublic_key = keys/pub.pem\nalgorithms = RS256\n",
        filter_factories={"jwt": factory.validate},
        base_dir=str(tmp_path),
    )
    assert config.filters["auth"].settings.public_key_file == str(tmp_path / "keys" / "pub.pem")
