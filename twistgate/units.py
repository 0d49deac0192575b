"""
The value types of gw.ini: durations, sizes, rates and yes/no switches.

The config package turns every such string into a number here, once, at load time; nothing after it
parses a string.  Each parser raises ``ValueError`` with a short message that quotes the bad value
and shows the accepted forms, because that message becomes the tail of a ``check`` line:
``gw.ini: [gateway] request_timeout: '5x' is not a duration (use 250ms, 30s, 5m, 1h)``.

The ``format_*`` functions go the other way, for ``python -m twistgate check`` and log lines.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import attrs

__all__ = [
    "Rate",
    "format_duration",
    "format_size",
    "parse_bool",
    "parse_duration",
    "parse_rate",
    "parse_size",
]

_DURATION_HINT = "use 250ms, 30s, 5m, 1h"
_SIZE_HINT = "use 512KB, 10MB, 1GB or a number of bytes"
_RATE_HINT = "use 100/1m, 10/s, 5/10s"
_BOOL_HINT = "use yes or no; true/false, on/off and 1/0 work too"

# Longest unit first, so that "ms" is never read as minutes followed by a stray "s".
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", re.IGNORECASE)
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+", re.IGNORECASE)

# 1024-based, as nginx's client_max_body_size and most operators' intuition have it.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)", re.IGNORECASE)

_RATE = re.compile(r"([0-9]+)\s*/\s*(\S+)")
# The period of a rate may be a bare unit ("10/s"), meaning one of that unit.
_PERIOD_WORDS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}

_TRUE = frozenset(["yes", "true", "on", "1"])
_FALSE = frozenset(["no", "false", "off", "0"])


@attrs.frozen
class Rate:
    """
    A rate limit: at most ``count`` events per ``period`` seconds.

    ``100/1m`` is ``Rate(count=100, period=60.0)``.
    """

    count: int
    period: float

    @property
    def per_second(self) -> float:
        """The sustained rate in events per second (for token-bucket refill)."""
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.period)}"


def parse_duration(text: str) -> float:
    """
    Parse a duration such as ``250ms``, ``30s``, ``5m``, ``1h``, ``1d`` or ``1h30m`` into seconds.

    A bare ``0`` is accepted (zero needs no unit); any other bare number is refused, because
    "30" could as well mean milliseconds as seconds and a wrong guess is a silent outage.
    """
    value = text.strip()
    if value == "0":
        return 0.0
    if not _DURATION.fullmatch(value):
        raise ValueError(f"'{text}' is not a duration ({_DURATION_HINT})")
    seconds = 0.0
    for number, unit in _DURATION_PART.findall(value):
        seconds += float(number) * _DURATION_UNITS[unit.lower()]
    if not math.isfinite(seconds):
        raise ValueError(f"'{text}' is not a duration (too long)")
    return seconds


def parse_positive_duration(text: str) -> float:
    """A duration longer than zero (timeouts, intervals, lifetimes)."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"'{text}' must be longer than 0")
    return seconds


def parse_size(text: str) -> int:
    """
    Parse a size such as ``512KB``, ``10MB``, ``1GB``, ``100B`` or a bare integer into bytes.

    Units are 1024-based (``1KB`` is 1024 bytes); ``KiB``/``MiB``/``GiB`` and the one-letter forms
    ``K``/``M``/``G`` mean the same.  A fractional size (``1.5MB``) is rounded down to whole bytes.
    """
    value = text.strip()
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"'{text}' is not a size ({_SIZE_HINT})")
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None or (unit == "" and "." in number):
        raise ValueError(f"'{text}' is not a size ({_SIZE_HINT})")
    return int(Fraction(number) * multiplier)


def parse_rate(text: str) -> Rate:
    """
    Parse a rate such as ``100/1m``, ``10/s`` or ``5/10s`` into a ``Rate``.

    The count must be at least 1 and the period longer than zero: a limit that lets nothing
    through is better written as a route that does not exist.
    """
    value = text.strip()
    match = _RATE.fullmatch(value)
    if match is None:
        raise ValueError(f"'{text}' is not a rate ({_RATE_HINT})")
    count_text, period_text = match.groups()
    period = _PERIOD_WORDS.get(period_text.lower())
    if period is None:
        try:
            period = parse_duration(period_text)
        except ValueError:
            raise ValueError(f"'{text}' is not a rate ({_RATE_HINT})") from None
    count = int(count_text)
    if count < 1:
        raise ValueError(f"'{text}' is not a rate (the count must be at least 1)")
    if period <= 0:
        raise ValueError(f"'{text}' is not a rate (the period must be longer than 0)")
    return Rate(count=count, period=period)


def parse_bool(text: str) -> bool:
    """Parse yes/no, true/false, on/off or 1/0, in any case, into a ``bool``."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"'{text}' is not a yes/no value ({_BOOL_HINT})")


def format_duration(seconds: float) -> str:
    """
    Write ``seconds`` back in the largest unit that represents it exactly: 300.0 is ``5m``,
    0.25 is ``250ms``, 90.0 is ``90s``.  ``parse_duration(format_duration(x)) == x`` for any
    whole number of milliseconds.
    """
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    millis = round(seconds * 1000, 6)
    if millis == int(millis):
        return f"{int(millis)}ms"
    return f"{seconds!r}s"


def format_size(size: int) -> str:
    """Write a byte count in the largest 1024-based unit that represents it exactly: ``10MB``."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
