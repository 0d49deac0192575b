"""The section reader every filter factory validates with."""

from __future__ import annotations

import pytest

from twistgate import units
from twistgate.config import SectionError
from twistgate.filters.sections import SectionReader


def test_unknown_keys_blank_values_parse_errors_and_required_keys_are_all_reported():
    reader = SectionReader(
        {"rat": "5/s", "burst": "", "shadow": "perhaps", "window": "10s"},
        ["rate", "burst", "shadow", "window"],
    )
    assert reader.values == {"shadow": "perhaps", "window": "10s"}
    assert reader.require("rate", units.parse_rate) is None
    assert reader.get("burst", int, 0) == 0
    assert reader.get("shadow", units.parse_bool, False) is False
    assert reader.get("window", units.parse_duration) == 10.0
    reader.problem("window", "needs rate")
    with pytest.raises(SectionError) as raised:
        reader.check()
    keys = [key for key, _ in raised.value.problems]
    assert keys == ["rat", "rate", "shadow", "window"]
    assert raised.value.problems[0] == ("rat", "unknown key (did you mean 'rate'?)")


def test_a_clean_section_passes():
    reader = SectionReader({"rate": " 5/s "}, ["rate"])
    assert reader.require("rate", units.parse_rate).count == 5
    reader.check()
