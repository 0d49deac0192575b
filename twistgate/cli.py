"""
``twistgate`` and ``python -m twistgate``: the gateway's helper commands, beside ``twistd
twistgate`` which runs it.

The installed console script (setup.py's ``console_scripts``) and ``python -m twistgate``
(__main__.py) both call L{main}; only the program name in messages differs, so the two can never
drift apart.

``check FILE`` validates a config the way start-up does and prints what it would run (routes,
chains, upstreams), so a config can be checked before a deploy or a reload.  ``token`` prints an
HS256 JWT for trying out a route behind a jwt filter.  ``--version`` prints twistgate's version.
None of them touches the reactor.

Exit status: 0 success, 1 an invalid config, 2 a usage mistake (argparse's convention).
A user's mistake is always one line per problem on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Callable

import jwt

from twistgate import __version__, units
from twistgate.config import ConfigError, config_warnings, format_summary, load_config


def installed_filter_factories() -> Mapping[str, Callable[[Mapping[str, str]], object]]:
    """
    The validators of every installed filter, by ``use =`` name, as tap.py passes them: ``check``
    must accept exactly what ``twistd twistgate`` accepts.
    """
    try:
        from twistgate.filters import filter_factories
    except ImportError:  # a tree without the filter machinery: no filter names are known
        return {}
    return {name: factory.validate for name, factory in filter_factories().items()}


def check(path: str) -> int:
    """
    Validate the config at ``path``: print ``PATH: OK`` and a summary, or every problem (exit 1).
    Warnings (valid but unwise: see L{config_warnings}) go to stderr and leave the exit status 0.
    """
    try:
        config = load_config(path, filter_factories=installed_filter_factories())
    except ConfigError as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        return 1
    for line in config_warnings(config):
        print(line, file=sys.stderr)
    print(f"{path}: OK")
    print(format_summary(config))
    return 0


def make_token(
    secret: str,
    ttl: float,
    subject: str | None = None,
    claims: Mapping[str, object] | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """
    An HS256 JWT with ``iat`` = ``now`` and ``exp`` = ``now + ttl``, plus ``sub``, ``iss``, ``aud``
    where given.  ``claims`` are added last, so ``--claim`` can override any of them on purpose.
    """
    issued = int(time.time() if now is None else now)
    payload: dict[str, object] = {"iat": issued, "exp": issued + max(1, int(round(ttl)))}
    if subject is not None:
        payload["sub"] = subject
    if issuer is not None:
        payload["iss"] = issuer
    if audience is not None:
        payload["aud"] = audience
    payload.update(claims or {})
    return jwt.encode(payload, secret, algorithm="HS256")


def parse_claim(text: str) -> tuple[str, object]:
    """
    ``k=v`` -> ``(k, v)``: a value that is a JSON integer or boolean (``42``, ``true``) keeps its
    type, as a ``uid`` or ``admin`` claim should; anything else stays the string as written.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"'{text}' is not KEY=VALUE")
    try:
        decoded = json.loads(value)
    except ValueError:
        return key, value
    if isinstance(decoded, (bool, int)):
        return key, decoded
    return key, value


def token(args: argparse.Namespace, prog: str = "twistgate") -> int:
    """Print the token the ``token`` arguments ask for; a bad value is one line on stderr, 2."""
    try:
        ttl = units.parse_positive_duration(args.ttl)
    except ValueError as e:
        print(f"{prog} token: --ttl: {e}", file=sys.stderr)
        return 2
    try:
        claims = dict(parse_claim(claim) for claim in args.claim)
    except ValueError as e:
        print(f"{prog} token: --claim: {e}", file=sys.stderr)
        return 2
    # PyJWT warns about short HMAC keys through `warnings`, which prints two lines of source
    # location; a one-line note says the same to someone trying the gateway out.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = make_token(
            args.secret,
            ttl,
            subject=args.sub,
            claims=claims,
            issuer=args.issuer,
            audience=args.audience,
        )
    for warning in caught:
        print(f"{prog} token: warning: {warning.message}", file=sys.stderr)
    print(encoded)
    return 0


def build_parser(prog: str = "twistgate") -> argparse.ArgumentParser:
    """The command line, named C{prog} in its usage and messages."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Helper commands for the twistgate API gateway "
        "(run the gateway itself with: twistd -n twistgate --config gw.ini).",
    )
    # The same text whichever way it was started, so that scripts can compare it.
    parser.add_argument("--version", action="version", version=f"twistgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check_parser = commands.add_parser(
        "check",
        help="validate a config file and print its routes, upstreams and filter chains",
        description="Validate a gw.ini and print what it configures. "
        "Exit 0 if it is valid, 1 with one line per problem if not.",
    )
    check_parser.add_argument("file", metavar="FILE", help="the config file, e.g. gw.ini")

    token_parser = commands.add_parser(
        "token",
        help="print an HS256 JWT for trying out the gateway",
        description="Print an HS256 JWT signed with --secret, for a route behind a jwt filter.",
    )
    token_parser.add_argument("--secret", required=True, help="the HS256 key (the filter's secret)")
    token_parser.add_argument("--sub", help="the subject claim, e.g. alice")
    token_parser.add_argument(
        "--ttl",
        default="1h",
        help="how long the token is valid: 30s, 5m, 1h (default 1h)",
    )
    token_parser.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another claim; JSON integers and booleans keep their type (repeatable)",
    )
    token_parser.add_argument("--issuer", help="the iss claim")
    token_parser.add_argument("--audience", help="the aud claim")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "twistgate") -> int:
    """
    Run one command; returns the exit status (``--version``, ``--help`` and usage mistakes exit
    through argparse's C{SystemExit}: 0, 0 and 2).  The console script calls it as it is;
    ``python -m twistgate`` passes its own C{prog}.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.file)
    if args.command == "token":
        return token(args, prog)
    parser.print_help(sys.stderr)
    return 2
