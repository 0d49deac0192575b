"""
The admin API on the status listener: POST /admin/reload and POST /admin/cache/purge.

Both change the running gateway, so both take POST only, and every answer is JSON. The status
listener has no authentication of its own: it belongs on loopback or behind a proxy that
authenticates (docs/status.md). What this module does guard against is a web page in an
operator's browser posting to it across origins (a form can POST without any preflight): a
request whose ``Origin`` is not the status listener's own is refused with 403.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.internet.defer import FirstError
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from twistgate.status.pages import Directory, Endpoint, answer_error, answer_json
from twistgate.stores import StoreUnavailable

log = Logger()

#: RFC 9110 §15.5.21's reason phrase for 422, the answer to a reload of a config with problems.
UNPROCESSABLE_CONTENT = b"Unprocessable Content"


def same_origin(request) -> bool:
    """
    Whether C{request} may change things: no C{Origin} (curl, scripts, Prometheus) or an
    C{Origin} naming the host and port the request was sent to.
    """
    origins = request.requestHeaders.getRawHeaders(b"origin")
    if not origins:
        return True
    origin = origins[0].decode("latin-1")
    host = (request.getHeader(b"host") or b"").decode("latin-1").lower()
    try:
        return urlsplit(origin).netloc.lower() == host and bool(host)
    except ValueError:
        return False


class AdminEndpoint(Endpoint):
    methods = (b"POST",)

    def render(self, request):
        if request.method in self.methods and not same_origin(request):
            return answer_error(request, 403, "cross-origin requests to the admin API are refused")
        return super().render(request)


class Reload(AdminEndpoint):
    """POST /admin/reload: read gw.ini again, as SIGHUP does."""

    def __init__(self, gateway):
        super().__init__()
        self.gateway = gateway

    def answer(self, request):
        log.info("reload asked for through the admin API")
        try:
            problems = self.gateway.reload()
        except Exception as error:
            log.failure("reload through the admin API failed")
            return answer_json(
                request, 500, {"reloaded": False, "problems": ["reload failed: %s" % (error,)]}
            )
        if problems:
            body = answer_json(request, 422, {"reloaded": False, "problems": list(problems)})
            # Twisted 25.5 knows no phrase for 422 and would send "Unknown Status".
            request.setResponseCode(422, UNPROCESSABLE_CONTENT)
            return body
        return answer_json(request, 200, {"reloaded": True})


class Purge(AdminEndpoint):
    """
    POST /admin/cache/purge?prefix=/users: the gateway's C{purge(prefix)} (every cache filter,
    in every worker) drops what it holds under that path prefix; the answer counts what was
    dropped.
    """

    def __init__(self, gateway):
        super().__init__()
        self.gateway = gateway

    def answer(self, request):
        values = request.args.get(b"prefix")
        if not values or not values[0]:
            return answer_error(request, 400, "a prefix is required: ?prefix=/path")
        try:
            prefix = values[0].decode("utf-8")
        except UnicodeDecodeError:
            return answer_error(request, 400, "the prefix is not UTF-8")
        if not prefix.startswith("/"):
            return answer_error(request, 400, "the prefix must be a path starting with '/'")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = self.gateway.purge(prefix)
        d.addCallback(self._purged, request, prefix, gone)
        d.addErrback(self._failed, request, gone)
        return NOT_DONE_YET

    def _purged(self, purged: int, request, prefix: str, gone: list[bool]) -> None:
        log.info("cache purge of {prefix}: {purged} response(s) dropped",
                 prefix=prefix, purged=purged)
        self._finish(request, answer_json(request, 200, {"purged": purged}), gone)

    def _failed(self, failure, request, gone: list[bool]) -> None:
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if failure.check(StoreUnavailable):
            # Redis is down (logged once by the store): nothing shared could be dropped. Say so,
            # so that whoever purges can try again, rather than believe it done.
            body = answer_error(request, 503, "the shared store is down: purge again once it "
                                "is back (%s)" % failure.getErrorMessage())
        else:
            log.failure("cache purge failed", failure)
            body = answer_error(request, 500, "the purge failed; see the log")
        self._finish(request, body, gone)

    @staticmethod
    def _finish(request, body: bytes, gone: list[bool]) -> None:
        """Send the answer, unless the client hung up while the purge ran (C{gone})."""
        if request.finished or gone:
            return
        request.write(body)
        request.finish()


def admin_tree(gateway) -> Directory:
    """/admin and what is under it."""
    admin = Directory()
    admin.putChild(b"reload", Reload(gateway))
    cache = Directory()
    cache.putChild(b"purge", Purge(gateway))
    admin.putChild(b"cache", cache)
    return admin
