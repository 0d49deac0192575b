"""
The dropin package for filter plugins.

Like ``twisted/plugins``, this package's path covers every ``twistgate/plugins/`` directory on
sys.path, so a third party ships ``twistgate/plugins/theirs.py`` in their own distribution and
L{twisted.plugin.getPlugins} finds it next to the built-in filters.

L{twisted.plugin.getPlugins} logs a dropin module that fails to import and goes on without it;
L{import_failures} names such modules with their errors, so that the configuration can say why a
``use = NAME`` it does not know may be missing.
"""

from __future__ import annotations

import sys

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821
__all__: list = []


def import_failures() -> dict[str, str]:
    """
    The dropin modules of this package that cannot be imported, by module name, each with its
    error as C{"ExceptionType: message"}.

    A module already imported has nothing to report; any other is imported here (a module that
    fails to import is not kept in C{sys.modules}, so it is tried again, as getPlugins does).
    Called on the error path only (an unknown ``use = NAME``).
    """
    from twisted.python.modules import getModule

    failures: dict[str, str] = {}
    for module in getModule(__name__).iterModules():
        if module.name in sys.modules:
            continue
        try:
            module.load()
        except Exception as error:  # a third party's module may fail in any way
            failures[module.name] = f"{type(error).__name__}: {error}"
    return failures
