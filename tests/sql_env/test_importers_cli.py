"""`openrl-agent data import`, through Typer's CliRunner, on the test fixtures."""

from typer.testing import CliRunner

from agent.cli import app
from tests.fixtures.text2sql_fixtures import write_context, write_spider

runner = CliRunner(env={"COLUMNS": "200"})


def test_import_prints_the_report_and_show_reads_it(tmp_path, cache_dir):
    src = write_spider(tmp_path / "spider")
    result = runner.invoke(app, ["data", "import", "spider", str(src), "--name", "cli-spider"])
    assert result.exit_code == 0, result.output
    assert "ran in DuckDB: 13/15; matched SQLite: 12/13" in result.output
    assert "missing_database" in result.output
    again = runner.invoke(app, ["data", "import", "spider", str(src), "--name", "cli-spider"])
    assert again.exit_code == 1 and "--force" in again.output
    shown = runner.invoke(app, ["data", "show", "cli-spider", "--split", "dev"])
    assert shown.exit_code == 0 and "4 examples in 1 databases" in shown.output


def test_import_context_file_with_split(tmp_path):
    path = write_context(tmp_path / "rows.jsonl")
    result = runner.invoke(app, ["data", "import", "context", str(path), "--name", "c", "--split", "test",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "test.jsonl").is_file()


def test_import_user_errors(tmp_path):
    for args, message in ((["spider", str(tmp_path / "missing")], "does not exist"),
                          (["parquet", str(tmp_path)], "unknown format 'parquet'")):
        result = runner.invoke(app, ["data", "import", *args, "--name", "x"])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_show_prints_brackets_verbatim(tmp_path):
    """Evidence and SQL are data, not Rich markup."""
    from tests.fixtures.text2sql_fixtures import write_bird

    out = tmp_path / "bird-out"
    assert runner.invoke(app, ["data", "import", "bird", str(write_bird(tmp_path / "b")), "--name", "b",
                               "--out", str(out)]).exit_code == 0
    shown = runner.invoke(app, ["data", "show", str(out), "--split", "dev", "--limit", "3"])
    assert shown.exit_code == 0, shown.output
    assert "[Charter] = 1" in shown.output
