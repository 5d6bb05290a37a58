"""Every command's --help reads as a new user expects: a flag is shown as a flag.

Typer labels a boolean flag with its type (`--json <bool>`), which reads as "takes a
value" (and `--json true` is then a usage error). Walks every command and group.
"""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tradelab.cli.main import app


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _command in _commands(get_command(app))]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tradelab")
def test_flags_read_as_flags_in_every_help(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    command = dict(_commands(get_command(app)))[path]
    for param in command.params:
        if getattr(param, "is_flag", False):
            for opt in param.opts:
                line = next(x for x in result.output.splitlines() if opt in x.split(", ")[-1]
                            or x.strip().startswith(opt))
                after = line.split(opt, 1)[1]
                assert not after.startswith(" <"), (path, line)


def test_a_flag_given_a_value_is_one_usage_line(lab_dir):
    result = CliRunner().invoke(app, ["alerts", "--json", "true"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unexpected extra argument" in result.stderr
