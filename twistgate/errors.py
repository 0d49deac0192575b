"""
The answers the gateway makes itself (SPEC 4), in one place.

Every such answer is a small JSON object ``{"error", "message", "status"}`` with
``Content-Type: application/json``. Its body is made here; L{twistgate.exchange.Reply.error} makes
the whole answer from it, for the filters and the proxy, and L{twistgate.respond.send_error} writes
one for the listener and the router, so that the shape never drifts.
"""

from __future__ import annotations

import json

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
    431: "request_header_fields_too_large",
    499: "client_closed_request",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    501: "not_implemented",
    504: "gateway_timeout",
    505: "http_version_not_supported",
}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    """The JSON body of a gateway-made answer."""
    return json.dumps(
        {"error": code or ERROR_CODES.get(status, "error"), "message": message, "status": status},
        separators=(",", ":"),
    ).encode("utf-8")

