"""
Twisted's private API is named in one module only, twistgate/http/_twisted.py.

Every other module of the gateway goes through that module's checked helpers, so a Twisted
release that changes its internals is met in one place, by a check with a fallback. This test reads
every module's syntax tree and fails on an import from a private Twisted module (one with a dotted
component starting with C{_}, like C{twisted.web._newclient}) and on any use, as an attribute or
as the name given to C{getattr} and its kin, of the private attributes of Twisted objects the
gateway relies on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import twistgate

#: The one module allowed to name Twisted's private API.
COMPATIBILITY_MODULE = Path("http") / "_twisted.py"

#: Private attributes of Twisted objects: of Headers, of a TCP transport, of the reactor.
PRIVATE_ATTRIBUTES = frozenset(
    [
        "_rawHeaders",
        "dataBuffer",
        "_tempDataBuffer",
        "_tempDataLen",
        "offset",
        "_writeDisconnecting",
        "_writeDisconnected",
        "bufferSize",
        "socket",
        "_exitSignal",
    ]
)

_BY_NAME = frozenset(["getattr", "setattr", "hasattr", "delattr"])


def _private_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "twisted" and any(part.startswith("_") for part in parts[1:])


def violations(source: str, filename: str) -> list[str]:
    """Each use of Twisted's private API in C{source}, as C{"file:line: what"}."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        what = None
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if _private_module(node.module):
                what = "imports from " + node.module
            elif node.module.split(".")[0] == "twisted":
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    what = "imports %s from %s" % (", ".join(private), node.module)
        elif isinstance(node, ast.Import):
            private = [a.name for a in node.names if _private_module(a.name)]
            if private:
                what = "imports " + ", ".join(private)
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            # socket.socket is the standard library's class, not a transport's socket.
            if not (node.attr == "socket" and isinstance(node.value, ast.Name)
                    and node.value.id == "socket"):
                what = "uses ." + node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _BY_NAME
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in PRIVATE_ATTRIBUTES
        ):
            what = "uses %s(..., %r)" % (node.func.id, node.args[1].value)
        if what is not None:
            found.append((node.lineno, what))
    return ["%s:%d: %s" % (filename, line, what) for line, what in sorted(found)]


def package_violations(root: Path) -> list[str]:
    """Every use of Twisted's private API under C{root} outside the compatibility module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative != COMPATIBILITY_MODULE:
            found.extend(violations(path.read_text(encoding="utf-8"), str(relative)))
    return found


def test_no_module_but_the_compatibility_module_names_twisted_private_api():
    root = Path(twistgate.__file__).parent
    assert (root / COMPATIBILITY_MODULE).exists()
    assert package_violations(root) == []


def test_the_compatibility_module_itself_would_be_caught():
    # The walk above skips it; read on its own it shows every kind of use the test looks for.
    source = (Path(twistgate.__file__).parent / COMPATIBILITY_MODULE).read_text(encoding="utf-8")
    found = "\n".join(violations(source, "_twisted.py"))
    for what in ("imports from twisted.web._newclient", "uses ._rawHeaders", "uses .dataBuffer",
                 "uses ._tempDataBuffer", "uses .offset", "uses ._writeDisconnecting",
                 "uses .bufferSize", "uses .socket", "uses ._exitSignal"):
        assert what in found


def test_every_way_of_naming_private_api_is_caught():
    source = """
import socket
import twisted.web._newclient
from twisted.web._newclient import ParseError
from twisted.web import _newclient
from twisted.web.http_headers import Headers
headers._rawHeaders = {}
raw = getattr(headers, "_rawHeaders", None)
transport.socket.send(b"")
reactor._exitSignal = None
s = socket.socket()
"""
    found = violations(source, "m.py")
    assert found == [
        "m.py:3: imports twisted.web._newclient",
        "m.py:4: imports from twisted.web._newclient",
        "m.py:5: imports _newclient from twisted.web",
        "m.py:7: uses ._rawHeaders",
        "m.py:8: uses getattr(..., '_rawHeaders')",
        "m.py:9: uses .socket",
        "m.py:10: uses ._exitSignal",
    ]
