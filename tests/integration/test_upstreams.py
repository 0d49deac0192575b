"""Upstream edge cases through a real twistd: TLS targets, non-HTTP answers, HEAD, health checks."""

from __future__ import annotations

import datetime
import json

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.protocol import Factory, Protocol

from tests.integration.harness import CountingSite, Upstream, free_port


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory):
    """A CA and a certificate for 'localhost' signed by it; returns (ca.pem, cert, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("twistgate test CA")).issuer_name(_name("twistgate test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca_path, cert.public_bytes(pem), key_pem


@pytest.fixture
def tls_upstream(tmp_path):
    ca_path, cert_pem, key_pem = make_pki(tmp_path)
    resource = Upstream("tls")
    certificate = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
    port = reactor.listenSSL(0, CountingSite(resource), certificate.options(),
                             interface="127.0.0.1")
    resource.url = "https://localhost:%d" % port.getHost().port
    yield resource, ca_path
    port.stopListening()




@pytest_twisted.inlineCallbacks
def test_https_targets_are_verified_against_the_ca_file(tls_upstream, gateway):
    upstream, ca_path = tls_upstream
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:trusted]
        targets = {upstream.url}
        ca_file = {ca_path}
        [upstream:system]
        targets = {upstream.url}
        retries = 0
        [upstream:unchecked]
        targets = {upstream.url}
        tls_verify = no
        [route:trusted]
        prefix = /trusted
        upstream = trusted
        [route:system]
        prefix = /system
        upstream = system
        [route:unchecked]
        prefix = /unchecked
        upstream = unchecked
        """
    )
    response = yield treq.get(gw.url("/trusted/x"))
    assert response.code == 200
    assert (yield response.json())["uri"] == "/trusted/x"
    response = yield treq.get(gw.url("/system/x"))
    assert response.code == 502
    assert (yield response.json())["error"] == "bad_gateway"
    response = yield treq.get(gw.url("/unchecked/x"))
    assert response.code == 200
    yield response.content()
    log = gw.log()
    assert "tls_verify = no" in log
    assert "certificate verify failed" in log or "SSL" in log
    assert [seen["uri"] for seen in upstream.seen] == ["/trusted/x", "/unchecked/x"]


class Garbage(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"SSH-2.0-OpenSSH_9.2\r\nthis is not HTTP\r\n\r\n")
        self.transport.loseConnection()


@pytest.fixture
def garbage_server():
    port = reactor.listenTCP(0, Factory.forProtocol(Garbage), interface="127.0.0.1")
    yield "http://127.0.0.1:%d" % port.getHost().port
    port.stopListening()




@pytest_twisted.inlineCallbacks
def test_an_answer_that_is_not_http_is_a_502(garbage_server, gateway):
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:garbage]
        prefix = /
        upstream = {garbage_server}
        """
    )
    response = yield treq.get(gw.url("/x"))
    assert response.code == 502
    body = json.loads((yield response.content()))
    assert body == {"error": "bad_gateway", "message": "the upstream's answer was not HTTP",
                    "status": 502}


@pytest_twisted.inlineCallbacks
def test_head_gets_the_headers_without_a_body(upstreams, gateway):
    big = upstreams("big")
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [route:big]
        prefix = /
        upstream = {big.url}
        """
    )
    response = yield treq.head(gw.url("/big?n=1000"))
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/octet-stream"]
    assert response.headers.getRawHeaders(b"content-length") == [b"1000"]
    assert (yield response.content()) == b""
    response = yield treq.get(gw.url("/big?n=1000"))
    assert len((yield response.content())) == 1000


@pytest_twisted.inlineCallbacks
def test_a_target_failing_its_health_check_gets_no_traffic(upstreams, gateway):
    sick, well = upstreams("sick"), upstreams("well")
    sick.health_status = 500
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:pair]
        targets = {sick.url} {well.url}
        health_check = /health
        health_interval = 1s
        [route:pair]
        prefix = /app
        upstream = pair
        """
    )
    # The first round of checks runs at start-up; wait until both targets were asked.
    for _ in range(100):
        if any(s["uri"] == "/health" for s in sick.seen) and any(
            s["uri"] == "/health" for s in well.seen
        ):
            break
        yield treq.get(gw.url("/nowhere")).addCallback(lambda r: r.content())
    names = []
    for _ in range(6):
        response = yield treq.get(gw.url("/app"))
        names.append(response.headers.getRawHeaders(b"x-upstream")[0])
        yield response.content()
    assert names == [b"well"] * 6
    assert not any(s["uri"] == "/app" for s in sick.seen)


@pytest_twisted.inlineCallbacks
def test_a_lone_target_back_from_an_outage_serves_at_once_not_503(gateway):
    # SPEC 3, panic: passive health never takes the last target out, so the gateway keeps
    # trying it (502 while it refuses) and serves as soon as it answers, not 503 for 60 s.
    target_port = free_port()
    gw = gateway(
        f"""
        [gateway]
        listen = tcp:{{port}}:interface=127.0.0.1
        [upstream:lone]
        targets = http://127.0.0.1:{target_port}
        max_fails = 1
        fail_timeout = 60s
        [route:lone]
        prefix = /lone
        upstream = lone
        """
    )
    for _ in range(4):
        response = yield treq.get(gw.url("/lone/x"))
        body = json.loads((yield response.content()))
        assert (response.code, body["message"]) == (502, "the upstream could not be reached")
    resource = Upstream("lone")
    listening = reactor.listenTCP(target_port, CountingSite(resource), interface="127.0.0.1")
    try:
        for _ in range(3):
            response = yield treq.get(gw.url("/lone/x"))
            assert response.code == 200
            assert (yield response.json())["upstream"] == "lone"
    finally:
        yield listening.stopListening()
    assert [seen["uri"] for seen in resource.seen] == ["/lone/x"] * 3
    log = gw.log()
    assert log.count("upstream lone in panic") == 1
    assert log.count("upstream lone out of panic") == 1
