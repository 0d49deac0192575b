"""The upstream connections' read timeout is [gateway] idle_timeout, and follows a reload."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from twistgate.config import parse_config
from twistgate.filters import filter_factories
from twistgate.gateway import Gateway

FACTORIES = filter_factories()
VALIDATORS = {name: factory.validate for name, factory in FACTORIES.items()}

CONFIG = """
[gateway]
listen = tcp:0:interface=127.0.0.1
%s
[upstream:users]
targets = http://127.0.0.1:4000
[route:users]
prefix = /users
upstream = users
"""


def config(gateway_keys=""):
    return parse_config(CONFIG % gateway_keys, filter_factories=VALIDATORS)


def read_timeout_of_pool(upstream):
    target = upstream.config.targets[0]
    upstream.client.host_value(target)  # prepares the target's connection pool
    (pool,) = upstream.client._pools.values()
    return pool.read_timeout


def test_upstream_bodies_are_bounded_by_idle_timeout_and_a_reload_applies_a_new_one():
    gw = Gateway(config(), MemoryReactorClock(), FACTORIES)
    old = gw.runtime.upstreams["users"]
    assert read_timeout_of_pool(old) == 60.0
    gw.apply(config("request_timeout = 5s"))
    assert gw.runtime.upstreams["users"] is old
    gw.apply(config("idle_timeout = 5s"))
    new = gw.runtime.upstreams["users"]
    assert new is not old
    assert read_timeout_of_pool(new) == 5.0
