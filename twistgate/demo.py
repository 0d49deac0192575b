"""
The example services behind ``twistd twistgate --demo``.

examples/gw.ini points the gateway at two small JSON services: ``users`` (two instances, on ports
4000 and 4001) and ``orders`` (one instance, on 5000). ``--demo`` starts them in the gateway's own
process, so a newcomer sees routing and balancing work with one command. They stand where your real
services would: upstream of the whole walk (listener -> router -> filters -> pool -> proxy).

Every answer is JSON and says which service and which instance answered it, and which of the
headers the gateway adds (X-Request-ID, X-Forwarded-*) arrived::

    GET /users/1  ->  {"service": "users", "instance": "users:4000", "method": "GET",
                       "path": "/users/1", "user": {"id": 1, "name": "Ada Lovelace"}, ...}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

DEFAULT_PORTS: Mapping[str, Sequence[int]] = {"users": (4000, 4001), "orders": (5000,)}

# Each service is a collection of records, keyed by id as it appears in the URL.
RECORDS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "users": {
        "1": {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"},
        "2": {"id": 2, "name": "Alan Turing", "email": "alan@example.com"},
        "3": {"id": 3, "name": "Grace Hopper", "email": "grace@example.com"},
    },
    "orders": {
        "101": {"id": 101, "user": 1, "item": "analytical engine", "total": 1843.0},
        "102": {"id": 102, "user": 2, "item": "bombe", "total": 1939.5},
        "103": {"id": 103, "user": 1, "item": "punched cards", "total": 12.25},
        "104": {"id": 104, "user": 3, "item": "compiler", "total": 1952.0},
    },
}

# The headers the gateway adds on the way upstream; echoed back so they can be seen with curl.
GATEWAY_HEADERS = ("X-Request-ID", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                   "X-User-Id")


class DemoResource(Resource):
    """
    One instance of one example service, answering every path itself.

    Paths are read from the end, so the service works whether the gateway strips the route's
    prefix or not: ``/users``, ``/api/users`` and ``/`` list the users; ``/users/2`` and ``/2``
    are user 2; ``/health`` is the health check.
    """

    isLeaf = True

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        if service not in RECORDS:
            raise ValueError(f"no demo service {service!r} (there are: {', '.join(RECORDS)})")
        self.service = service
        self.instance = instance
        self.records = RECORDS[service]

    def render(self, request: Request) -> bytes:
        method = request.method.decode("ascii", "replace")
        segments = [s for s in request.path.decode("utf-8", "replace").split("/") if s]

        if segments == ["health"]:
            return self._answer(request, 200, {"status": "ok"})
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            return self._echo(request, method)
        if method not in ("GET", "HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD, POST, PUT, PATCH, DELETE")
            return self._error(request, 405, "method_not_allowed", f"{method} is not served here")

        if not segments or segments[-1] == self.service:
            return self._answer(request, 200, {self.service: self._list(request)})
        if len(segments) == 1 or segments[-2] == self.service:
            record = self.records.get(segments[-1])
            if record is None:
                return self._error(request, 404, "not_found",
                                   f"no {self.service[:-1]} {segments[-1]!r}")
            return self._answer(request, 200, {self.service[:-1]: record})
        return self._error(request, 404, "not_found", f"{self.service} has no such path")

    def _list(self, request: Request) -> list[Mapping[str, Any]]:
        """All records; for orders, ``?user=ID`` keeps only that user's."""
        records = list(self.records.values())
        user = request.args.get(b"user")
        if self.service == "orders" and user:
            wanted = user[0].decode("utf-8", "replace")
            records = [r for r in records if str(r["user"]) == wanted]
        return records

    def _echo(self, request: Request, method: str) -> bytes:
        """POST answers 201, PUT, PATCH and DELETE 200, each with the JSON body it was sent."""
        raw = request.content.read() if request.content is not None else b""
        try:
            received = json.loads(raw) if raw.strip() else None
        except ValueError:
            return self._error(request, 400, "bad_json", "the request body is not JSON")
        return self._answer(request, 201 if method == "POST" else 200, {"received": received})

    def _error(self, request: Request, status: int, code: str, message: str) -> bytes:
        # The same shape as the gateway's own error answers (SPEC section 4).
        return self._answer(request, status, {"error": code, "message": message, "status": status})

    def _answer(self, request: Request, status: int, fields: Mapping[str, Any]) -> bytes:
        body: dict[str, Any] = {
            "service": self.service,
            "instance": self.instance,
            "method": request.method.decode("ascii", "replace"),
            "path": request.path.decode("utf-8", "replace"),
        }
        body.update(fields)
        seen = {h: request.getHeader(h) for h in GATEWAY_HEADERS if request.getHeader(h)}
        if seen:
            body["gateway_headers"] = seen
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body, indent=2).encode("utf-8") + b"\n"


class DemoSite(Site):
    """A Site that keeps the demo's own access lines out of the gateway's log."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


def demo_resource(service: str, instance: str) -> Resource:
    """The resource of one instance of an example service (``"users"`` or ``"orders"``)."""
    return DemoResource(service, instance)


def demo_service(
    interface: str = "127.0.0.1", ports: Mapping[str, Sequence[int]] | None = None
) -> MultiService:
    """
    Every example service on its ports: by default users on 4000 and 4001, orders on 5000,
    the targets examples/gw.ini names. Start it (or hand it to twistd) to listen.
    """
    parent = MultiService()
    parent.setName("demo")
    # An IPv6 address has colons, which separate the fields of an endpoint string.
    host = interface.replace(":", "\\:")
    for service, numbers in (DEFAULT_PORTS if ports is None else ports).items():
        for port in numbers:
            site = DemoSite(demo_resource(service, f"{service}:{port}"))
            listener = strports.service(f"tcp:{port}:interface={host}", site)
            listener.setName(f"demo-{service}-{port}")
            listener.setServiceParent(parent)
    return parent
