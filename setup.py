"""
Packaging for twistgate: `pip install .` gives the `twistgate` package and its twistd plugin.
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """__version__ from twistgate/__init__.py, read as text so that nothing is imported."""
    text = (HERE / "twistgate" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    if found is None:
        raise RuntimeError("no __version__ in twistgate/__init__.py")
    return found.group(1)


setup(
    name="twistgate",
    version=read_version(),
    description="An API gateway on Twisted: routing, balancing, health checks and filters",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # twisted/plugins has no __init__.py: it is Twisted's own plugin package, which our dropin
    # (twistgate_plugin.py) joins when installed, so that `twistd twistgate` finds it. Listing it
    # here ships its .py files; its dropin.cache is Twisted's to rebuild, never ours to ship.
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"]) + ["twisted.plugins"],
    include_package_data=False,
    # The status dashboard's page, script and style sheet are read from the package at run time.
    package_data={"twistgate.status": ["static/*"]},
    exclude_package_data={"": ["dropin.cache"]},
    # `twistgate check gw.ini`, `twistgate token ...`, `twistgate --version`: the helper commands
    # without a bare `python`; `python -m twistgate` runs the same twistgate.cli.main.
    entry_points={"console_scripts": ["twistgate = twistgate.cli:main"]},
    zip_safe=False,
    install_requires=[
        "twisted[tls]>=25.5",
        "treq",
        "pyjwt[crypto]",
        "attrs",
        "service-identity",
        "hyperlink",
        # /metrics: the Prometheus text format (and its escaping and histogram rules) and the
        # process collector, from the reference client rather than written again here.
        "prometheus_client",
        # [store] backend = redis: the Redis client. Twisted-native (Deferreds, no threads),
        # maintained, with EVALSHA/SCRIPT LOAD for the rate-limit script, reconnection with
        # back-off, and Sentinel (redis+sentinel:// URLs).
        "txredisapi",
        # Debian's PyPy is Python 3.9; the newer releases of these no longer build or run there.
        'cryptography<44; platform_python_implementation == "PyPy"',
        'pyOpenSSL<25; platform_python_implementation == "PyPy"',
    ],
    extras_require={
        # ruff is held to one minor series: a new series may add checks, and CI should not fail
        # because a linter was released. Raise it on purpose, fixing what it finds.
        # selenium drives Debian's chromium (scripts/test installs it) for the dashboard test.
        "test": ["pytest", "pytest-twisted", "hypothesis", "ruff>=0.17,<0.18", "selenium"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: Implementation :: CPython",
        "Programming Language :: Python :: Implementation :: PyPy",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
        "Topic :: Internet :: Proxy Servers",
    ],
)
