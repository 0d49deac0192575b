"""``python -m twistgate check gw.ini`` and ``python -m twistgate token``: see twistgate.cli."""

from __future__ import annotations

from twistgate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
