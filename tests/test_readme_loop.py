"""The README's loop names only commands and flags that exist, in the order a new user
types them: each line, with --help appended, parses (an unknown flag is a usage error
before --help is honoured), and the loop keeps the load in the background before
`chaos on`, so one terminal is enough."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradelab.cli.main import app

README = (Path(__file__).parents[1] / "README.md").read_text()
LOOP = re.search(r"## The loop\n.*?```sh\n(.*?)```", README, re.S).group(1)
LINES = [line.split("  #")[0].strip() for line in LOOP.splitlines()
         if line.startswith("tradelab ")]


@pytest.mark.parametrize("line", LINES)
def test_every_line_of_the_loop_parses(line, lab_dir):
    args = shlex.split(line)[1:]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, (line, result.output)


def test_the_load_runs_in_the_background_before_the_fault():
    load = next(i for i, line in enumerate(LINES) if line.startswith("tradelab load "))
    assert "--detach" in LINES[load].split()
    assert load < LINES.index("tradelab chaos on") < LINES.index("tradelab watch")
    assert LINES.index("tradelab chaos off") < LINES.index("tradelab load stop")
