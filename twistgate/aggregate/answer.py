"""
What the client gets from an aggregate: the merged JSON answer, or an error answer.

The merged answer is one JSON object with one key per part, in the order of the ``fetch.NAME``
keys in gw.ini (never in the order the answers arrived): each holds that part's JSON answer, or
``null`` for a part that failed. When any part failed, an ``errors`` object follows, naming each
failed part with ``{"reason", "status", "message"}`` (``status``: the upstream's, or null), and
the answer carries ``X-Twistgate-Partial: true`` and ``Cache-Control: no-store`` (a degraded
answer is for now, not for a cache to keep).

When a ``required`` part failed, or every part did, the answer is the gateway's own error
(SPEC 4's ``{"error", "message", "status"}``, with the same ``errors`` object): 504 when the
time ran out for any of the parts that decided it, else 502.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.http_headers import Headers

from twistgate.aggregate.part import TIMEOUT, PartResult
from twistgate.errors import ERROR_CODES
from twistgate.exchange import Reply

#: The header that marks an answer some parts are missing from.
PARTIAL = b"x-twistgate-partial"

# ensure_ascii (the default): a part's odd strings (lone surrogates) still make valid JSON.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def merged_reply(order: Sequence[str], required: Sequence[str],
                 results: Mapping[str, PartResult]) -> Reply:
    """The client's answer from every part's result (see the module docstring)."""
    failed = [results[name] for name in order if not results[name].ok]
    errors = {result.name: {"reason": result.reason, "status": result.status,
                            "message": result.message} for result in failed}
    broken_required = [name for name in required if not results[name].ok]
    if broken_required or len(failed) == len(order):
        deciding = [results[name] for name in broken_required] if broken_required else failed
        status = 504 if any(result.reason == TIMEOUT for result in deciding) else 502
        if broken_required:
            names = ", ".join(f"'{name}'" for name in broken_required)
            message = f"the required part {names} failed" if len(broken_required) == 1 else (
                f"the required parts {names} failed")
        else:
            message = "every part of the aggregate failed"
        body = _dumps({"error": ERROR_CODES[status], "message": message, "status": status,
                       "errors": errors}).encode("ascii")
        return _reply(status, body, partial=False, from_gateway=True)
    answer: dict = {name: results[name].value for name in order}
    if errors:
        answer["errors"] = errors
    return _reply(200, _dumps(answer).encode("ascii"), partial=bool(errors))


def _reply(status: int, body: bytes, partial: bool, from_gateway: bool = False) -> Reply:
    headers = Headers({
        b"date": [datetimeToString()],
        b"content-type": [b"application/json"],
        b"content-length": [b"%d" % len(body)],
    })
    if partial:
        headers.setRawHeaders(PARTIAL, [b"true"])
    if partial or status != 200:
        headers.setRawHeaders(b"cache-control", [b"no-store"])
    return Reply(status, RESPONSES.get(status, b"Error"), headers, body, from_gateway=from_gateway)
