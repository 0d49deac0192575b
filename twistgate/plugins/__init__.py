"""
The dropin package for filter plugins.

Like ``twisted/plugins``, this package's path covers every ``twistgate/plugins/`` directory on
sys.path, so a third party ships ``twistgate/plugins/theirs.py`` in their own distribution and
L{twisted.plugin.getPlugins} finds it next to the built-in filters.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821
__all__: list = []
