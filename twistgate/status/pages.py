"""
The status listener's resources: /status, /status.json, /metrics, /healthz and the static files.

The status listener is a twisted.web Site of its own (see L{twistgate.status}); nothing here is
reachable from the public listener, whose router knows only the configured routes. Every answer
that is not the dashboard or a static file is JSON, errors included, in the shape of SPEC 4.
"""

from __future__ import annotations

import json
import pkgutil

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from twistgate.errors import error_body
from twistgate.status.report import status_report

#: The files under /static/, from the package (twistgate/status/static/): name -> content type.
STATIC_FILES = {
    "dashboard.js": b"application/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}

#: The dashboard loads nothing from anywhere but the status listener itself (and works offline).
_PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def read_static(name: str) -> bytes:
    """A file of twistgate/status/static, read through the package (so installs find it)."""
    data = pkgutil.get_data("twistgate.status", "static/" + name)
    if data is None:  # pragma: no cover - a loader without get_data
        raise FileNotFoundError(name)
    return data


def answer_json(request, status: int, value) -> bytes:
    """Set C{request} up to answer C{value} as JSON with C{status}; returns the body."""
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def answer_error(request, status: int, message: str, headers=None) -> bytes:
    """A SPEC 4 style error answer on the status listener."""
    body = error_body(status, message)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return body


class Endpoint(Resource):
    """
    One path of the status listener: answers its own methods, and JSON 404 / 405 otherwise.

    Subclasses set C{methods} and define C{answer(request)}.
    """

    isLeaf = True
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def render(self, request):
        if request.postpath:
            return answer_error(request, 404, "no such path on the status listener")
        if request.method not in self.methods:
            allow = b", ".join(self.methods)
            return answer_error(
                request,
                405,
                "method %s is not allowed here" % (request.method.decode("latin-1"),),
                {b"allow": allow},
            )
        return self.answer(request)

    def answer(self, request):  # pragma: no cover - abstract
        raise NotImplementedError


class NotFound(Endpoint):
    """Any path the status listener does not serve."""

    methods = ()

    def render(self, request):
        return answer_error(request, 404, "no such path on the status listener")


class Directory(Resource):
    """A node of the tree whose unknown children are JSON 404s (and which is no page itself)."""

    def getChild(self, path, request):
        return NotFound()

    def render(self, request):
        return NotFound().render(request)


class Dashboard(Endpoint):
    """/status: the page; its script polls /status.json."""

    def __init__(self):
        super().__init__()
        self.page = read_static("dashboard.html")

    def render(self, request):
        if request.postpath == [b""]:
            # /status/ -> /status, so that the page's relative links resolve.
            request.setResponseCode(301)
            request.setHeader(b"location", b"../status")
            request.setHeader(b"content-length", b"0")
            return b""
        return super().render(request)

    def answer(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", _PAGE_POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return self.page


class StaticFile(Endpoint):
    def __init__(self, data: bytes, content_type: bytes):
        super().__init__()
        self.data = data
        self.content_type = content_type

    def answer(self, request):
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self.data


class StatusJSON(Endpoint):
    """/status.json: L{status_report}."""

    def __init__(self, status):
        super().__init__()
        self.status = status

    def answer(self, request):
        status = self.status
        report = status_report(
            status.gateway, status.traffic, status.monitor, status.clock.seconds()
        )
        return answer_json(request, 200, report)


class Metrics(Endpoint):
    """/metrics: the registry in Prometheus' text format."""

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def answer(self, request):
        body = generate_latest(self.registry)
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class Healthz(Endpoint):
    """/healthz: 200 while the gateway serves, 503 once it drains to stop."""

    def __init__(self, site):
        super().__init__()
        self.site = site

    def answer(self, request):
        if self.site.draining:
            return answer_json(request, 503, {"status": "draining"})
        return answer_json(request, 200, {"status": "ok"})


def status_tree(status, admin: Resource) -> Resource:
    """The root resource of a gateway process's status listener."""
    return status_root(
        StatusJSON(status), Metrics(status.registry), Healthz(status.gateway.site), admin
    )


def status_root(
    status_json: Resource, metrics: Resource, healthz: Resource, admin: Resource
) -> Resource:
    """
    What every status listener serves, whoever supplies its figures (one gateway process, or
    the parent of workers): the dashboard and its static files, and the endpoints given.
    """
    root = Directory()
    root.putChild(b"status", Dashboard())
    root.putChild(b"status.json", status_json)
    root.putChild(b"metrics", metrics)
    root.putChild(b"healthz", healthz)
    root.putChild(b"admin", admin)
    static = Directory()
    for name, content_type in STATIC_FILES.items():
        static.putChild(name.encode("ascii"), StaticFile(read_static(name), content_type))
    root.putChild(b"static", static)
    root.putChild(b"", Redirect(b"status"))
    return root


class Redirect(Endpoint):
    """/ -> /status."""

    def __init__(self, location: bytes):
        super().__init__()
        self.location = location

    def answer(self, request):
        request.setResponseCode(302)
        request.setHeader(b"location", self.location)
        request.setHeader(b"content-length", b"0")
        return b""


class StatusSite(Site):
    """The status listener's factory: no per-request log line (the dashboard polls each second)."""

    displayTracebacks = False

    def log(self, request) -> None:
        pass
