"""deploy/README.md names only settings, commands and files that exist."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from memberpulse.streams.cli.main import app
from tests.deploy.support import DEPLOY, field_for

README = DEPLOY / "README.md"
#: `memberpulse` subcommands, with their sub-subcommands where they have some.
_COMMAND = re.compile(r"`memberpulse ((?:[a-z]+)(?: (?:add|list|promote|up|down|status|show))?)")


def test_every_variable_named_is_a_real_setting() -> None:
    names = set(re.findall(r"\bMEMBERPULSE_[A-Z0-9_]+", README.read_text()))
    assert len(names) > 10
    for name in names:
        field_for(name)


def test_every_memberpulse_command_named_exists() -> None:
    commands = set(_COMMAND.findall(README.read_text()))
    assert {"worker", "model promote", "model add", "export"} <= commands
    for command in commands:
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, f"`memberpulse {command}`: {result.output}"


def test_every_linked_file_exists() -> None:
    links = re.findall(r"\]\(((?!https?:)[^)#]+)\)", README.read_text())
    assert links
    for link in links:
        assert (DEPLOY / link).exists(), link
