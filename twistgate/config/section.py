"""
One section's keys, substituted, with typed getters that report a bad value and go on.

checks.py reads every section through a ``_Section``: a bad key becomes one problem line and the
getter returns the default, so that the rest of the section is still checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Callable

from twistgate.config.environment import _substitute
from twistgate.config.ini import _HIDDEN, _Problems
from twistgate.config.values import _suggest


class _Section:
    """
    One section's keys after substitution, with typed getters that record a problem and return
    the default when a value is bad, so that a section with one bad key still checks the others.
    """

    def __init__(
        self, name: str, raw: Mapping[str, str], variables: Mapping[str, str], problems: _Problems
    ):
        self.name = name
        self.problems = problems
        self.ok = True
        self.values: dict[str, str] = {}
        self.unsubstituted: set[str] = set()
        for key, value in raw.items():
            if key.startswith(_HIDDEN) or key == "":
                continue
            result, bad = _substitute(value, variables)
            for problem in bad:
                self.problem(key, problem)
            if bad:
                self.unsubstituted.add(key)
            else:
                self.values[key] = result

    def problem(self, key: str | None, problem: str) -> None:
        self.ok = False
        self.problems.add(self.name, key, problem)

    def allow(self, keys: Iterable[str], extra: Callable[[str], bool] = lambda key: False) -> None:
        """Report every key that is neither one of ``keys`` nor accepted by ``extra``."""
        keys = list(keys)
        for key in list(self.values) + sorted(self.unsubstituted):
            if key not in keys and not extra(key):
                self.problem(key, "unknown key" + _suggest(key, keys))

    def text(self, key: str, required: bool = False) -> str | None:
        """The key's value, or None when it is absent or empty (``ca_file =`` means unset)."""
        value = self.values.get(key, "").strip()
        if value:
            return value
        if required and key not in self.unsubstituted:
            self.problem(key, "required")
        return None

    def get(
        self,
        key: str,
        parse: Callable[[str], object],
        default: object = None,
        required: bool = False,
    ):
        """``parse(value)``, or ``default`` when the key is unset or its value is bad."""
        value = self.text(key, required)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as e:
            self.problem(key, str(e))
            return default

    def words(self, key: str, parse: Callable[[str], object] = str) -> tuple:
        """A whitespace-separated list, each word parsed; a bad word is reported and left out."""
        result = []
        for word in (self.text(key) or "").split():
            try:
                result.append(parse(word))
            except ValueError as e:
                self.problem(key, str(e))
        return tuple(result)
