"""
Reading a filter's section: what every filter factory's validate() does the same way.

A factory gets its section's keys as strings; it must refuse unknown keys (with a did-you-mean),
treat ``key =`` as unset (as everywhere in gw.ini), parse each value once, and report every
problem at once through L{SectionError}. L{SectionReader} does that part, so that a filter's
validate() says only what its keys are and how they combine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from twistgate.config import SectionError, suggest

T = TypeVar("T")


class SectionReader:
    """
    The keys of one filter section, parsed one at a time, with every problem kept.

    @ivar values: the keys that are known and set, stripped of surrounding blanks.
    @ivar problems: (key, problem) pairs found so far.
    """

    def __init__(self, section: Mapping[str, str], known: Iterable[str]):
        known = tuple(known)
        self.problems: list[tuple[str, str]] = []
        self.values: dict[str, str] = {}
        for key, raw in section.items():
            if key not in known:
                self.problems.append((key, "unknown key" + suggest(key, known)))
                continue
            text = raw.strip()
            if text:  # "key =" means unset
                self.values[key] = text

    def get(self, key: str, parse: Callable[[str], T], default: Any = None) -> T | Any:
        """C{parse} of the key's value; C{default} when it is unset or does not parse."""
        if key not in self.values:
            return default
        try:
            return parse(self.values[key])
        except ValueError as error:
            self.problems.append((key, str(error)))
            return default

    def require(self, key: str, parse: Callable[[str], T]) -> T | None:
        """Like L{get}, and a problem when the key is not set."""
        if key not in self.values:
            self.problems.append((key, "required"))
            return None
        return self.get(key, parse)

    def problem(self, key: str, text: str) -> None:
        """Record a problem that only the filter itself can see (keys that go together...)."""
        self.problems.append((key, text))

    def check(self) -> None:
        """Raise L{SectionError} with every problem, if there is any."""
        if self.problems:
            raise SectionError(self.problems)
