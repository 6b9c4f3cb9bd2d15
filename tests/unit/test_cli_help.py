"""`receiver --help` names every setting's environment variable, and every flag that
overrides a setting names its variable too."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from receiver.cli import main
from receiver.core import config
from receiver.core.config import Settings


class _Recording(dict[str, str]):
    """An environment that remembers every variable `Settings.from_env` asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


def test_the_environment_table_is_what_from_env_reads() -> None:
    env = _Recording()
    Settings.from_env(env)
    assert sorted(env.asked) == sorted(name for name, _, _ in config.ENVIRONMENT)


def test_top_level_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main.main(["--help"])
    shown = capsys.readouterr().out
    for name, default, _ in config.ENVIRONMENT:
        assert re.search(rf"^  {name} +{re.escape(default)} ", shown, re.M), name


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = main._parser()
    found: dict[str, argparse.ArgumentParser] = {"": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_each_flag_that_overrides_a_setting_names_its_variable() -> None:
    # The table says which flag overrides which variable ("(--port)"); the simulator's own
    # --host/--port are its own, not the receiver's.
    overrides = {
        flag: name for name, _, meaning in config.ENVIRONMENT for flag in re.findall(r"\((--[a-z-]+)", meaning)
    }
    assert overrides  # the table names some flags at all
    checked = 0
    for command, parser in _commands().items():
        if command == "simulate":
            continue
        for action in parser._actions:
            for flag in action.option_strings:
                if flag in overrides:
                    assert f"env {overrides[flag]}" in (action.help or ""), (command, flag)
                    checked += 1
    assert checked >= 6  # run/serve --host --port, serve --workers, publish --concurrency --metrics-port, -v
