"""The twistd plugin: ``twistd twistgate --config gw.ini`` (see twistgate.tap)."""

from twisted.application.service import ServiceMaker

twistgate = ServiceMaker(
    "twistgate",
    "twistgate.tap",
    "An API gateway: routes by URL prefix to upstream pools, with filters.",
    "twistgate",
)
