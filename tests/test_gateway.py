"""The gateway service: what a reload keeps, replaces and refuses; drain (in memory)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from twistgate.config import ConfigError, parse_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway

FACTORIES = filter_factories()
VALIDATORS = {name: factory.validate for name, factory in FACTORIES.items()}

BASE = """
[gateway]
listen = tcp:0:interface=127.0.0.1
[upstream:users]
targets = http://127.0.0.1:4000
[upstream:orders]
targets = http://127.0.0.1:5000
[filter:breaker]
use = circuit_breaker
failures = 3
[route:users]
prefix = /users
upstream = users
filters = breaker
[route:orders]
prefix = /orders
upstream = orders
"""


def config(text=BASE):
    return parse_config(text, filter_factories=VALIDATORS)


def gateway(text=BASE, load=None):
    return Gateway(config(text), MemoryReactorClock(), FACTORIES, load=load)


def test_unchanged_upstreams_and_filters_are_taken_over_and_changed_ones_rebuilt():
    gw = gateway()
    old = gw.runtime
    gw.apply(config(BASE.replace("127.0.0.1:5000", "127.0.0.1:5001").replace(
        "prefix = /users", "prefix = /people")))
    new = gw.runtime
    assert gw.router.runtime is new
    assert new.upstreams["users"] is old.upstreams["users"]
    assert new.upstreams["orders"] is not old.upstreams["orders"]
    assert new.filters["breaker"] is old.filters["breaker"]
    assert new.routes.match(b"/people/1").upstream is old.upstreams["users"]
    assert new.routes.match(b"/users/1") is None
    gw.apply(config(BASE.replace("failures = 3", "failures = 4")))
    assert gw.runtime.filters["breaker"] is not new.filters["breaker"]


def test_a_reload_that_does_not_validate_changes_nothing():
    def broken():
        raise ConfigError(["gw.ini: [route:users] upstream: no section [upstream:userz]"])

    gw = gateway(load=broken)
    before = gw.runtime
    assert gw.reload() == ["gw.ini: [route:users] upstream: no section [upstream:userz]"]
    assert gw.runtime is before and gw.router.runtime is before


def test_listener_changes_open_and_close_listeners():
    gw = gateway()
    assert list(gw.listeners) == ["tcp:0:interface=127.0.0.1"]
    gw.apply(config(BASE.replace("listen = tcp:0:interface=127.0.0.1",
                                 "listen = tcp:0:interface=127.0.0.2")))
    assert list(gw.listeners) == ["tcp:0:interface=127.0.0.2"]
    assert [s for s in gw if s in gw.listeners.values()] == list(gw.listeners.values())


def test_health_checkers_follow_the_upstreams():
    with_health = BASE.replace("targets = http://127.0.0.1:4000",
                               "targets = http://127.0.0.1:4000\nhealth_check = /health")
    gw = gateway(with_health)
    checker = gw.checkers["users"]
    assert checker in list(gw)
    gw.apply(config(with_health))
    assert gw.checkers["users"] is checker
    gw.apply(config(BASE))
    assert gw.checkers == {} and checker not in list(gw)


def test_drain_fires_when_the_last_request_in_flight_ends():
    gw = gateway()
    site = gw.site
    site.in_flight = 2
    drained = site.drain()
    assert site.draining and not drained.called
    site.request_done()
    assert not drained.called
    site.request_done()
    assert drained.called


def test_drain_with_nothing_in_flight_is_immediate():
    gw = gateway()
    assert gw.site.drain().called


def test_sighup_means_reload_before_any_listener_opens():
    import gc
    import signal

    from twisted.application.service import Service

    seen = []

    class FirstChild(Service):
        def startService(self):
            seen.append(signal.getsignal(signal.SIGHUP))

    gw = gateway(load=config)
    first = FirstChild()
    first.setServiceParent(gw)
    gw.services.remove(first)
    gw.services.insert(0, first)
    before = signal.getsignal(signal.SIGHUP)
    try:
        gw.startService()
        assert seen == [gw._on_hup]
    finally:
        gw.stopService()
        signal.signal(signal.SIGHUP, before)
        if hasattr(gc, "unfreeze"):
            gc.unfreeze()  # startService froze this test process's objects
    assert signal.getsignal(signal.SIGHUP) == before
