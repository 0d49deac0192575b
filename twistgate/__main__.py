"""``python -m twistgate``: the same command line as the ``twistgate`` console script (cli.py)."""

from __future__ import annotations

from twistgate.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m twistgate"))
