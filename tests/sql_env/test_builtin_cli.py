"""`openrl-agent data build` and `data show`, run as a user would, through Typer's CliRunner."""

import pytest
from typer.testing import CliRunner

from agent.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_build_reports_a_cached_build(builtin_dir):
    result = runner.invoke(app, ["data", "build"])
    assert result.exit_code == 0, result.output
    assert "cached, use --force to rebuild" in result.output
    assert "order_items (5000)" in result.output
    assert "train 3200, dev 400, test 400" in result.output


@pytest.mark.slow
def test_build_into_a_folder(tmp_path, cache_dir):
    result = runner.invoke(app, ["data", "build", "--seed", "3", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "built in" in result.output and (tmp_path / "b" / "dev.jsonl").is_file()


def test_show_lists_examples_and_counts(builtin_dir):
    result = runner.invoke(app, ["data", "show", "builtin", "--split", "dev", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "dev-0000" in result.output and "dev-0002" not in result.output
    assert "group_having" in result.output and "400 examples in 4 databases" in result.output
    assert "composition 134" in result.output and "phrasing 133" in result.output
    only = runner.invoke(app, ["data", "show", "--split", "train", "--limit", "0", "--family", "join_two"])
    assert only.exit_code == 0 and "join_two" in only.output and "filter_in" not in only.output


def test_bad_name_and_split_are_one_red_line(builtin_dir):
    for args, message in ((["data", "show", "nope"], "unknown dataset 'nope'"),
                          (["data", "show", "builtin", "--split", "val"], "no split 'val'")):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) <= 2


def test_help_has_examples():
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0 and "openrl-agent data show builtin --split dev" in result.output
