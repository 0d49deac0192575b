"""
twistgate: an API gateway on Twisted.

A request walks listener (site.py) -> router (router.py) -> filter chain (filters/) -> upstream pool
(pool.py) -> forwarding (proxy.py) -> response; tap.py wires them together for twistd.
"""

__version__ = "0.1.0"
