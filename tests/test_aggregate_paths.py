"""Which aggregate a request path is (twistgate/aggregate/paths.py): whole paths, one segment
per placeholder, literal segments first."""

from __future__ import annotations

import pytest

from twistgate.aggregate.paths import AggregateTable


class Route:
    def __init__(self, path):
        self.config = self
        self.path = path


PROFILE, ME, ITEM, ROOT = Route("/profile/{id}"), Route("/profile/me"), Route(
    "/shop/{shop}/items/{item}"), Route("/")
TABLE = AggregateTable([PROFILE, ITEM, ME, ROOT])


@pytest.mark.parametrize(
    "path, route, params",
    [
        (b"/profile/7", PROFILE, {"id": "7"}),
        (b"/profile/me", ME, {}),
        (b"/profile/caf%C3%A9", PROFILE, {"id": "caf\u00e9"}),
        (b"/profile/a%20b", PROFILE, {"id": "a b"}),
        (b"/shop/s1/items/i2", ITEM, {"shop": "s1", "item": "i2"}),
        (b"/", ROOT, {}),
    ],
)
def test_a_path_is_matched_whole_with_one_segment_per_placeholder(path, route, params):
    assert TABLE.match(path) == (route, params)


@pytest.mark.parametrize(
    "path",
    [b"/profile", b"/profile/", b"/profile/7/", b"/profile/7/orders", b"/profilex/7",
     b"/shop/s1/items", b"/shop//items/i2", b"/PROFILE/7"],
)
def test_anything_but_the_whole_path_is_no_aggregate(path):
    assert TABLE.match(path) is None


def test_a_segment_that_is_not_utf8_keeps_its_bytes():
    route, params = TABLE.match(b"/profile/%FF")
    assert params["id"].encode("utf-8", "surrogateescape") == b"\xff"
