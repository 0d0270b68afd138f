from typer.testing import CliRunner

from agent.cli import app


def test_help_lists_data_group():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output
