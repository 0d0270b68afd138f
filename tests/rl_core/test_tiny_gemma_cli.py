"""`openrl-agent model build|list` on the micro built-in (real build, real DuckDB scoring)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from agent.cli.model import app


def test_build_prints_size_and_dev_accuracy():
    result = CliRunner().invoke(app, ["build", "micro-gemma", "--eval-limit", "8", "--max-new-tokens", "16"])
    assert result.exit_code == 0, result.output
    assert "builtin:micro-gemma" in result.output and "parameters" in result.output
    accuracy = re.search(r"dev execution accuracy \(greedy, n=8\): (\d+\.\d)%", result.output)
    assert accuracy and 0.0 <= float(accuracy.group(1)) <= 100.0


def test_list_shows_the_builtins():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "builtin:tiny-gemma" in result.output and "builtin:micro-gemma" in result.output


def test_unknown_builtin_is_one_readable_error():
    result = CliRunner().invoke(app, ["build", "giant-gemma"])
    assert result.exit_code == 1
    assert "unknown built-in model 'giant-gemma'" in result.output
    assert "Traceback" not in result.output
