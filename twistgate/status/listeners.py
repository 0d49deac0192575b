"""
The status listeners of a service: opened and closed to match the configuration's ``listen``.

Shared by the status service of a single gateway process and by the parent of workers, which is
the one place the status listener lives when there are several processes.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Site

log = Logger()


def update_listeners(
    parent: MultiService,
    listeners: dict[str, IService],
    wanted: Iterable[str],
    site: Site,
    reactor: IReactorTime,
) -> None:
    """
    Close the listeners of C{listeners} (by endpoint description) that C{wanted} no longer names,
    and open, as services of C{parent}, those it names that are not open yet.
    """
    wanted = tuple(wanted)
    for description in list(listeners):
        if description not in wanted:
            log.info("status: no longer listening on {endpoint}", endpoint=description)
            listeners.pop(description).disownServiceParent()
    for description in wanted:
        if description in listeners:
            continue
        listener = strports.service(description, site, reactor=reactor)
        try:
            listener.setServiceParent(parent)
        except Exception as error:
            # Raised at once by a listener that cannot listen (port taken): the rest of the
            # configuration still applies, and the operator learns what to do.
            listener.disownServiceParent()
            log.error("status: cannot listen on {endpoint}: {error}; the status listener "
                      "stays without it until a reload or restart that can",
                      endpoint=description, error=error)
            continue
        listeners[description] = listener
        if parent.running:
            log.info("status: listening on {endpoint}", endpoint=description)
