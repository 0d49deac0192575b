"""
INI text -> a ConfigParser, with every structural error turned into a problem line.

configparser stops at the first duplicate or stray line and knows nothing of line numbers once it
has parsed; this module works around both, so that one run reports the whole file, in file order.
"""

from __future__ import annotations

import configparser
import re

# Never written by a user, so that configparser's DEFAULT magic never applies and a [DEFAULT]
# section is just another unknown section.
_NO_DEFAULT_SECTION = "\0no default section"
# Sections and keys renamed out of the way after a structural error (a duplicate, a key before
# any section), so that parsing can go on and report the rest of the file.
_HIDDEN = "\0"


class _Problems:
    """Problem lines, kept with their line number so they come out in file order."""

    def __init__(self, path: str):
        self.path = path
        self.lines: dict[tuple[str | None, str | None], int] = {}
        self._found: list[tuple[int, int, str]] = []

    def at_line(self, lineno: int, problem: str) -> None:
        self._found.append((lineno, len(self._found), f"{self.path}: line {lineno}: {problem}"))

    def add(self, section: str, key: str | None, problem: str) -> None:
        lineno = self.lines.get((section, key)) or self.lines.get((section, None), 0)
        where = f"[{section}] {key}" if key is not None else f"[{section}]"
        # One problem, one line: a multi-line value quoted in a message keeps its breaks visible.
        problem = problem.replace("\n", "\\n")
        self._found.append((lineno, len(self._found), f"{self.path}: {where}: {problem}"))

    def __bool__(self) -> bool:
        return bool(self._found)

    def sorted(self) -> list[str]:
        return [line for _, _, line in sorted(self._found)]


def _new_parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section=_NO_DEFAULT_SECTION,
        strict=True,
    )
    # Keys keep their case: fetch.userProfile names a field of the aggregate's JSON answer.
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


def _read_ini(text: str, problems: _Problems) -> configparser.ConfigParser:
    """
    Parse INI text, turning every structural error into a problem line.

    configparser stops at the first duplicate section or key, and at a key before any section;
    each time, the offending line is renamed out of the way and the text parsed again, so that one
    run reports all of them.  Malformed lines are reported and blanked the same way.
    """
    lines = text.split("\n")
    indented_headers: list[int] = []
    for attempt in range(len(lines) + 2):
        indented_headers = _locate(lines, problems)
        parser = _new_parser()
        try:
            parser.read_string("\n".join(lines), source=problems.path)
        except configparser.DuplicateSectionError as e:
            first = problems.lines.get((e.section, None))
            problems.at_line(
                e.lineno,
                f"[{e.section}]: duplicate section"
                + (f" (first on line {first})" if first else ""),
            )
            lines[e.lineno - 1] = f"[{_HIDDEN}{attempt}]"
        except configparser.DuplicateOptionError as e:
            if not e.section.startswith(_HIDDEN):  # the whole section is a reported duplicate
                first = problems.lines.get((e.section, e.option))
                problems.at_line(
                    e.lineno,
                    f"[{e.section}] {e.option}: duplicate key"
                    + (f" (first on line {first})" if first else ""),
                )
            line = lines[e.lineno - 1]
            cut = min(i for i in (line.find("="), line.find(":")) if i >= 0)
            indent = len(line) - len(line.lstrip())
            lines[e.lineno - 1] = line[:indent] + f"{_HIDDEN}{attempt} " + line[cut:]
        except configparser.MissingSectionHeaderError as e:
            problems.at_line(
                e.lineno,
                f"{e.line.strip()!r} is outside any section (put it under a header like [gateway])",
            )
            lines[e.lineno - 1] = f"[{_HIDDEN}{attempt}]"
        except configparser.ParsingError as e:
            # Older configparsers raise this before joining multi-line values: blank the bad
            # lines and parse again rather than use a half-finished parser.
            for lineno, _ in e.errors:
                bad = lines[lineno - 1].strip()
                problems.at_line(
                    lineno, f"cannot parse {bad!r} (expected 'key = value' or '[section]')"
                )
                lines[lineno - 1] = ";"
        else:
            break
    for lineno in indented_headers:
        problems.at_line(
            lineno,
            f"{lines[lineno - 1].strip()!r} is indented, so it continues the value above it"
            " (remove the indentation to start a section)",
        )
    return parser


def _locate(lines: list[str], problems: _Problems) -> list[int]:
    """
    Record the line number of every section header and key, as configparser reads them, so that
    problems found later (a missing reference, a bad value) can be sorted into file order.

    Returns the numbers of continuation lines that look like a section header: configparser
    quietly makes an indented ``[route:x]`` part of the value above, and the whole section with it.
    """
    problems.lines.clear()
    indented_headers = []
    section = None
    key_indent: int | None = None
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        content = re.split(r"\s[;#]", stripped, maxsplit=1)[0].strip()
        if key_indent is not None and indent > key_indent:
            # A continuation line of a multi-line value.
            if re.fullmatch(r"\[[^\]]+\]", content):
                indented_headers.append(lineno)
            continue
        header = configparser.ConfigParser.SECTCRE.match(content)
        if header:
            section = header.group("header")
            problems.lines.setdefault((section, None), lineno)
            key_indent = None
            continue
        option = configparser.ConfigParser.OPTCRE.match(content)
        if section is not None and option:
            problems.lines.setdefault((section, option.group("option").rstrip()), lineno)
            key_indent = indent
    return indented_headers
