"""A plugin module that fails to import is named, with its error, next to ``unknown filter``."""

from __future__ import annotations

import sys

import pytest

from twistgate import plugins
from twistgate.config import ConfigError, parse_config


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    """twistgate/plugins/broken_thing.py in another directory, importing a module nobody has."""
    directory = tmp_path / "site" / "twistgate" / "plugins"
    directory.mkdir(parents=True)
    (directory / "broken_thing.py").write_text("import no_such_module_anywhere\n")
    monkeypatch.setattr(plugins, "__path__", [*plugins.__path__, str(directory)])
    yield "twistgate.plugins.broken_thing"
    sys.modules.pop("twistgate.plugins.broken_thing", None)


def test_import_failures_names_the_module_and_its_error(broken_plugin):
    assert plugins.import_failures() == {
        broken_plugin: "ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    }


def test_without_a_broken_plugin_there_is_nothing_to_report():
    assert plugins.import_failures() == {}


def test_the_unknown_filter_line_is_followed_by_the_failed_module(broken_plugin):
    with pytest.raises(ConfigError) as raised:
        parse_config("[filter:x]\nuse = thing\n", "gw.ini", filter_factories={})
    assert raised.value.problems == [
        "gw.ini: [filter:x] use: unknown filter 'thing'",
        "gw.ini: [filter:x] use: the plugin module 'twistgate.plugins.broken_thing' failed to "
        "import: ModuleNotFoundError: No module named 'no_such_module_anywhere'",
    ]


def test_a_known_filter_does_not_mention_a_broken_plugin(broken_plugin):
    config = parse_config(
        "[filter:x]\nuse = thing\n", "gw.ini", filter_factories={"thing": lambda section: None}
    )
    assert list(config.filters) == ["x"]
