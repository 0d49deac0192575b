"""GatewayRequest.write_interim: an interim (1xx) response written ahead of the answer."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.http_headers import Headers

from twistgate.listener.site import GatewaySite

HINTS = Headers(
    {
        b"Link": [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"],
        b"Connection": [b"X-Hop"],
        b"X-Hop": [b"1"],
        b"Keep-Alive": [b"timeout=5"],
        b"Content-Length": [b"12"],
    }
)


class Keep:
    """The site's root resource: keeps each request unanswered."""

    def __init__(self):
        self.requests = []

    def handle(self, request):
        self.requests.append(request)


def request_for(head: bytes):
    """A request of the listener made of C{head}: (request, transport)."""
    resource = Keep()
    site = GatewaySite(resource, MemoryReactorClock(), max_body=1000, header_timeout=10.0,
                       idle_timeout=60.0)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(head)
    (request,) = resource.requests
    return request, transport


def test_an_interim_response_is_written_before_the_answer_without_hop_by_hop_headers():
    request, transport = request_for(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert request.write_interim(103, b"Early Hints", HINTS)
    assert request.write_interim(103, b"", Headers({b"Link": [b"</b>; rel=preload"]}))
    request.write(b"ok")
    request.finish()
    interim = (
        b"HTTP/1.1 103 Early Hints\r\n"
        b"Link: </style.css>; rel=preload; as=style\r\nLink: </app.js>; rel=preload\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </b>; rel=preload\r\n\r\n"
    )
    assert transport.value().startswith(interim + b"HTTP/1.1 200 OK\r\n")
    assert transport.value().endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")


def test_an_http_1_0_client_gets_no_interim_response():
    request, transport = request_for(b"GET /x HTTP/1.0\r\n\r\n")
    assert not request.write_interim(103, b"Early Hints", HINTS)
    assert transport.value() == b""


def test_no_interim_response_once_the_answer_has_started_nor_a_101():
    request, transport = request_for(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert not request.write_interim(101, b"Switching Protocols", Headers())
    assert transport.value() == b""
    request.write(b"ok")
    written = transport.value()
    assert not request.write_interim(103, b"Early Hints", HINTS)
    assert transport.value() == written


def test_the_listeners_own_100_continue_is_not_repeated():
    request, transport = request_for(
        b"PUT /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not request.write_interim(100, b"Continue", Headers())
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_an_upstreams_100_continue_reaches_a_client_that_got_none_from_the_listener():
    request, transport = request_for(b"PUT /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n")
    assert request.write_interim(100, b"Continue", Headers())
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
