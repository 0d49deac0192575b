"""
The answers the gateway makes itself (SPEC 4), in one place.

Every such answer is a small JSON object ``{"error", "message", "status"}`` with
``Content-Type: application/json``; the router, the proxy and the filters all build them here so
that their shape never drifts.
"""

from __future__ import annotations

import json

from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.http_headers import Headers

#: status -> the short machine-readable code of SPEC 4's table.
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    429: "too_many_requests",
    499: "client_closed_request",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    """The JSON body of a gateway-made answer."""
    return json.dumps(
        {"error": code or ERROR_CODES.get(status, "error"), "message": message, "status": status},
        separators=(",", ":"),
    ).encode("utf-8")


def write_error(
    request,
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[bytes, bytes] | None = None,
    close: bool = False,
) -> None:
    """
    Answer C{request} (a twisted.web request) with a gateway error and finish it.

    @param headers: extra response headers, e.g. C{Allow} or C{Retry-After}.
    @param close: close the client connection after the answer (used when the request body was
        not read, so the connection cannot carry another request).
    """
    if request.finished or getattr(request, "_disconnected", False):
        return
    body = error_body(status, message, code)
    if close:
        request.channel.persistent = False
        request.setHeader(b"connection", b"close")
    request.setResponseCode(status, RESPONSES.get(status, b"Error"))
    response_headers: Headers = request.responseHeaders
    response_headers.setRawHeaders(b"date", [datetimeToString()])
    response_headers.setRawHeaders(b"content-type", [b"application/json"])
    response_headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
    for name, value in (headers or {}).items():
        response_headers.setRawHeaders(name, [value])
    request.write(body)
    request.finish()
