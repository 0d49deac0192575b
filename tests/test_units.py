"""The value types of gw.ini: durations, sizes, rates and yes/no switches (twistgate.units)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistgate.units import (
    Rate,
    format_duration,
    format_size,
    parse_bool,
    parse_duration,
    parse_positive_duration,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("1.5s", 1.5),
        ("1h30m", 5400.0),
        (" 10s ", 10.0),
        ("2H", 7200.0),
    ],
)
def test_durations_parse_into_float_seconds(text, seconds):
    result = parse_duration(text)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize("text", ["5x", "30", "1.5", "-1s", "s", "", "ms5", "1e3s", "inf", "5 m s"])
def test_bad_durations_say_what_is_accepted(text):
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    assert str(raised.value) == f"'{text}' is not a duration (use 250ms, 30s, 5m, 1h)"


def test_duration_message_is_exactly_the_documented_one():
    with pytest.raises(ValueError, match=r"^'5x' is not a duration \(use 250ms, 30s, 5m, 1h\)$"):
        parse_duration("5x")


@pytest.mark.parametrize(
    "text, size",
    [
        ("512KB", 512 * 1024),
        ("10MB", 10 * 1024 * 1024),
        ("1GB", 1024**3),
        ("100B", 100),
        ("100", 100),
        ("0", 0),
        ("64mb", 64 * 1024 * 1024),
        ("2KiB", 2048),
        ("1K", 1024),
        ("1.5MB", 1536 * 1024),
        ("10 MB", 10 * 1024 * 1024),
    ],
)
def test_sizes_parse_into_int_bytes_1024_based(text, size):
    result = parse_size(text)
    assert result == size
    assert isinstance(result, int)


@pytest.mark.parametrize("text", ["10XB", "MB", "-1", "1.5", "", "ten"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError) as raised:
        parse_size(text)
    hint = "use 512KB, 10MB, 1GB or a number of bytes"
    assert str(raised.value) == f"'{text}' is not a size ({hint})"


@pytest.mark.parametrize(
    "text, count, period",
    [
        ("100/1m", 100, 60.0),
        ("10/s", 10, 1.0),
        ("5/10s", 5, 10.0),
        ("1000/h", 1000, 3600.0),
        ("3/min", 3, 60.0),
        ("7 / 500ms", 7, 0.5),
    ],
)
def test_rates_parse_into_count_and_period(text, count, period):
    rate = parse_rate(text)
    assert rate == Rate(count=count, period=period)
    assert isinstance(rate.count, int)
    assert isinstance(rate.period, float)


@pytest.mark.parametrize("text", ["100", "100/", "/s", "x/s", "10/5x", "1.5/s", ""])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError) as raised:
        parse_rate(text)
    assert str(raised.value) == f"'{text}' is not a rate (use 100/1m, 10/s, 5/10s)"


def test_rate_needs_a_count_and_a_period():
    with pytest.raises(ValueError, match="the count must be at least 1"):
        parse_rate("0/s")
    with pytest.raises(ValueError, match="the period must be longer than 0"):
        parse_rate("10/0s")


def test_rate_is_frozen_and_knows_its_per_second_rate():
    rate = parse_rate("120/1m")
    assert rate.per_second == 2.0
    assert str(rate) == "120/1m"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        rate.count = 5


@pytest.mark.parametrize("text", ["yes", "YES", "true", "True", "on", "1", " On "])
def test_true_words(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["no", "No", "false", "FALSE", "off", "0"])
def test_false_words(text):
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["maybe", "", "2", "y", "nope"])
def test_other_words_are_not_booleans(text):
    with pytest.raises(ValueError, match=f"^'{text}' is not a yes/no value"):
        parse_bool(text)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0"),
        (0.25, "250ms"),
        (30, "30s"),
        (90, "90s"),
        (300, "5m"),
        (3600, "1h"),
        (1.5, "1500ms"),
    ],
)
def test_format_duration_uses_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips_whole_milliseconds(millis):
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12)


@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_round_trips(size):
    assert parse_size(format_size(size)) == size


def test_format_size_examples():
    assert format_size(10 * 1024 * 1024) == "10MB"
    assert format_size(1536) == "1536B"
    assert format_size(1024**3) == "1GB"


def test_a_positive_duration_is_longer_than_zero():
    assert parse_positive_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="'0s' must be longer than 0"):
        parse_positive_duration("0s")
