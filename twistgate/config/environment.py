"""
Where ``${NAME}`` references get their values: the environment and ``[gateway] env_file``.

A value is substituted before it is parsed, so that every check sees the text the gateway will
use; an unset name or a malformed reference is a problem of the key that holds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\{(?P<body>[^}]*)(?P<close>\}?)")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?\Z", re.S)
_ENV_LINE = re.compile(r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)\Z")


def _read_env_file(path: str) -> tuple[dict[str, str], list[str]]:
    """
    Read KEY=VALUE lines (``#`` comments, optional ``export``, optional quotes) into a dict.
    Returns the variables and the problems, which name the file's line numbers.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found: dict[str, str] = {}
    bad: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(stripped)
        if match is None:
            bad.append(f"line {lineno}: expected KEY=VALUE")
            continue
        value = match.group("value").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[match.group("key")] = value
    return found, bad


def _substitute(value: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """
    Fill ``${NAME}`` and ``${NAME:-default}`` in ``value``.  As in the shell, the default is used
    when NAME is unset or empty.  Returns the result and the problems (unset names, bad syntax).
    """
    problems: list[str] = []

    def replace(match: re.Match) -> str:
        if not match.group("close"):
            problems.append(f"'{match.group(0)}' is missing its closing '}}'")
            return ""
        body = _REFERENCE_BODY.match(match.group("body"))
        if body is not None and "${" in (body.group("default") or ""):
            name = body.group("name")
            problems.append(f"'${{{name}:-...}}': a default cannot contain another ${{...}}")
            return ""
        if body is None:
            problems.append(
                f"'{match.group(0)}' is not a valid reference (use ${{NAME}} or ${{NAME:-default}})"
            )
            return ""
        name, default = body.group("name", "default")
        found = variables.get(name)
        if default is not None and not found:
            return default
        if found is None:
            problems.append(f"${{{name}}} is not set")
            return ""
        return found

    return _REFERENCE.sub(replace, value), problems
