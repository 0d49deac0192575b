"""
One value at a time: targets, endpoints, networks, prefixes, templates, counts and methods.

Each parser takes the text of one key (or one word of it) and returns the value or raises
ValueError with the message that ends up after ``[section] key:`` in the problem line.  The
suggestions (``did you mean ...?``) for misspelt keys, names and sections live here too.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from twistgate.config.model import Target

_SECTIONS = ("gateway", "status", "store")
_NAMED_SECTIONS = ("upstream", "route", "filter", "aggregate")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?\Z")
_DIGITS = re.compile(r"[0-9]+\Z")  # not str.isdigit(), which also takes '²'
_BALANCES = ("round_robin", "least_conn", "random", "ip_hash")
_BACKENDS = ("memory", "redis")
_ENDPOINT_TYPES = ("tcp", "ssl", "unix", "tcp6", "systemd")
_ENDPOINT_HINT = "use tcp:3000, ssl:443:privateKey=key.pem or unix:/path/to/socket"


def parse_target(text: str) -> Target:
    """
    Parse an upstream target URL: http or https, a host, an optional port and an optional path.

    Raises ValueError for anything else, including a query, a fragment or credentials, since the
    proxy could not honour them on every request.
    """
    if not re.match(r"https?://", text, re.IGNORECASE):
        raise ValueError(f"'{text}' is not an http:// or https:// URL")
    if re.search(r"\s", text):
        raise ValueError(f"'{text}' is not a URL (it contains spaces)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"'{text}' has a bad port or host") from None
    if "@" in parts.netloc:
        raise ValueError(f"'{text}' must not contain a user name or password")
    if "?" in text:
        raise ValueError(f"'{text}' must not have a query ('?...')")
    if "#" in text:
        raise ValueError(f"'{text}' must not have a fragment ('#...')")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"'{text}' has no host")
    scheme = parts.scheme.lower()
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"'{text}' has a bad host") from None
        netloc_host = f"[{host}]"
    elif _HOST.match(host):
        netloc_host = host
    else:
        raise ValueError(f"'{text}' has a bad host")
    if port is None:
        port = 443 if scheme == "https" else 80
    elif port == 0:
        raise ValueError(f"'{text}' has a bad port")
    base_path = parts.path.rstrip("/")
    return Target(
        url=f"{scheme}://{netloc_host}:{port}{base_path}",
        scheme=scheme,
        host=host,
        port=port,
        base_path=base_path,
    )


def _check_endpoint(text: str) -> str:
    """
    A light check of a Twisted server endpoint string: a known type and, for TCP and TLS, a port.

    The real parse happens when tap.py builds the listener; this catches the common mistakes
    (``3000``, ``http:3000``, ``tcp:port``) at ``check`` time.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind = parts[0]
    if kind not in _ENDPOINT_TYPES:
        raise ValueError(f"'{text}' is not a Twisted endpoint ({_ENDPOINT_HINT})")
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    if kind in ("tcp", "tcp6", "ssl"):
        port = positional[0] if positional else keywords.get("port", "")
        if not _DIGITS.match(port) or int(port) > 65535:
            raise ValueError(f"'{text}' needs a port number 0-65535 after '{kind}:'")
    elif kind == "unix":
        if not (positional[0] if positional else keywords.get("address", "")):
            raise ValueError(f"'{text}' needs a socket path after 'unix:'")
    return text


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IP network for trusted_proxies; a bare address means just that host (/32 or /128)."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address or network") from None
    raise ValueError(f"'{text}' has host bits set (did you mean {loose}?)")


def _has_dot_segment(path: str) -> bool:
    """True if a path has a '.' or '..' segment, also when percent-encoded as %2e."""
    return any(seg.lower().replace("%2e", ".") in (".", "..") for seg in path.split("/"))


def _parse_prefix(text: str) -> str:
    """A route prefix, normalised without a trailing slash (except for "/" itself)."""
    if not text.startswith("/"):
        raise ValueError(f"'{text}' must start with '/'")
    if re.search(r"\s", text):
        raise ValueError(f"'{text}' must not contain spaces")
    if "?" in text or "#" in text:
        raise ValueError(f"'{text}' must be a path, without '?' or '#'")
    if _has_dot_segment(text):
        raise ValueError(f"'{text}' must not contain '.' or '..' segments")
    prefix = text.rstrip("/") or "/"
    if "//" in prefix:
        raise ValueError(f"'{text}' must not contain empty segments ('//')")
    return prefix


def _parse_route_template(text: str) -> tuple[str, set[str]]:
    """An aggregate's path: '/profile/{id}', each placeholder a whole segment; returns its names."""
    if not text.startswith("/"):
        raise ValueError(f"'{text}' must start with '/'")
    if re.search(r"\s", text) or "?" in text or "#" in text:
        raise ValueError(f"'{text}' must be a path, without spaces, '?' or '#'")
    if _has_dot_segment(text):
        raise ValueError(f"'{text}' must not contain '.' or '..' segments")
    names: set[str] = set()
    for segment in text.split("/"):
        if "{" not in segment and "}" not in segment:
            continue
        match = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", segment)
        if match is None:
            raise ValueError(f"'{text}': a placeholder must be a whole segment like '/{{id}}'")
        if match.group(1) in names:
            raise ValueError(f"'{text}': '{{{match.group(1)}}}' appears twice")
        names.add(match.group(1))
    return text, names


def _parse_count(text: str) -> int:
    """A non-negative integer."""
    if not _DIGITS.match(text):
        raise ValueError(f"'{text}' is not a whole number (0 or more)")
    return int(text)


def _parse_workers(text: str) -> int:
    """[gateway] workers: a whole number, or C{auto} for one per core (C{os.cpu_count()})."""
    if text == "auto":
        return os.cpu_count() or 1
    if not _DIGITS.match(text):
        raise ValueError(f"'{text}' is not a whole number (1 or more) or 'auto'")
    return int(text)


_UNDERSCORES = ("drop", "pass")


def _parse_underscores(text: str) -> str:
    """[gateway] underscores_in_headers: drop (nginx's default) or pass."""
    if text not in _UNDERSCORES:
        raise ValueError(f"'{text}' is not one of drop, pass" + _suggest(text, _UNDERSCORES))
    return text


def _parse_method(text: str) -> str:
    if not _TOKEN.match(text):
        hint = " (lists are separated by spaces)" if "," in text else ""
        raise ValueError(f"'{text}' is not an HTTP method{hint}")
    return text.upper()


def suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when ``word`` is close to one of ``candidates``, else ''."""
    by_lower = {c.lower(): c for c in sorted(candidates)}  # sorted: the same hint every run
    if word.lower() in by_lower:
        return f" (did you mean '{by_lower[word.lower()]}'?)"
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    if close:
        return f" (did you mean '{by_lower[close[0]]}'?)"
    return ""


_suggest = suggest  # the name the config package has used all along


def _suggest_section(section: str) -> str:
    """' (did you mean [upstream:x]?)' for a misspelt section header, else ''."""
    kind, colon, name = section.partition(":")
    if colon:
        close = difflib.get_close_matches(kind.lower(), _NAMED_SECTIONS, n=1)
        if close:
            return f" (did you mean [{close[0]}:{name}]?)"
    close = difflib.get_close_matches(kind.lower(), _SECTIONS, n=1)
    if close:
        return f" (did you mean [{close[0]}]?)"
    close = difflib.get_close_matches(kind.lower(), _NAMED_SECTIONS, n=1)
    if close:
        return f" (did you mean [{close[0]}:NAME]?)"
    return ""
