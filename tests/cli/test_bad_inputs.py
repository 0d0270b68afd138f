"""Every user mistake of the trial-contract issue: one clear line, exit 1, no traceback, and no
session directory left behind where the input was refused. Runs the real CLI in-process (Typer's
CliRunner); nothing trains, since every case is refused before a launch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app, common

runner = CliRunner()
GOAL = "raise dev accuracy of micro-gemma, 2 trials, 1 at a time"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setattr(common.err_console, "width", 400)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _config(tmp_path: Path, text: str | bytes, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _start_cases(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    model_dir = tmp_path / "model_no_weights"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    bad_json_model = tmp_path / "model_bad_config"
    bad_json_model.mkdir()
    (bad_json_model / "config.json").write_text("{not json")
    counter = iter(range(1000))

    def c(text: str | bytes, suffix: str = ".toml") -> list[str]:
        return ["--config", _config(tmp_path, text, f"c{next(counter)}{suffix}")]

    return [
        ("typo in [fixed]", c('[fixed]\n"hparams.learnig_rate" = 1e-4\n'), "learnig_rate"),
        ("negative pinned lr", c("[params.learning_rate]\nfixed = -1e-4\n"), "learning_rate"),
        ("group of one", c('[fixed]\n"hparams.group_size" = 1\n'), "group_size"),
        ("params is a number", c("params = 5\n"), "params"),
        ("fixed is a number", c("fixed = 7\n"), "fixed"),
        ("low is text", c('[params.learning_rate]\nlow = "a"\nhigh = 1e-3\n'), "low"),
        ("range outside the field", c("[params.temperature]\nlow = 0.5\nhigh = 9.0\n"), "temperature"),
        ("unknown param", c("[params.lerning_rate]\nlow = 1e-5\nhigh = 1e-3\n"), "lerning_rate"),
        ("choice the field refuses", c('[params.loss_type]\nchoices = ["dapo", "ppo"]\n'), "loss_type"),
        ("target is a word", c('target = "high"\n'), "target"),
        ("binary config", c(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"), ".toml"),
        ("config not found", ["--config", str(tmp_path / "missing.toml")], "not found"),
        ("sealed test split", c('[fixed]\n"eval.split" = "test"\n'), "sealed"),
        ("test as a report split", c('[fixed]\n"eval.report_split" = "test"\n'), "read once"),
        ("misspelt reward param", c('[fixed]\n"reward.params.length_fre_chars" = 10\n'), "length_fre_chars"),
        ("unknown reward component", c('[fixed]\n"reward.components.style" = 0.1\n'), "style"),
        ("unknown built-in", ["--model", "builtin:huge-gemma"], "unknown built-in model"),
        ("missing model dir", ["--model", str(tmp_path / "nope")], "does not exist"),
        ("model without weights", ["--model", str(model_dir)], "no weights"),
        ("model config not JSON", ["--model", str(bad_json_model)], "cannot be read"),
        ("hub id offline", ["--model", "someorg/some-model-that-is-not-cached"], "Hugging Face cache"),
        ("missing dataset", ["--dataset", str(tmp_path / "no_data")], "dataset"),
        ("unknown dataset name", ["--dataset", "not-imported-yet"], "unknown dataset"),
        ("runs dir is a file", ["--runs-dir", str(tmp_path / "afile")], "is a file"),
        ("runs dir that cannot exist", ["--runs-dir", "/proc/openrl-nope/runs"], "cannot be written"),
        ("launcher options as a string", c('launcher_options = "namespace=ml"\n'), "launcher_options"),
        ("k8s launcher from the config", c('launcher = "k8s"\n'), "cluster credentials"),
        ("k8s launcher flag", ["--launcher", "k8s"], "cluster credentials"),
        ("negative trials in goal", [], "trials"),
    ]


def test_every_refused_start_is_one_line_exit_1_and_leaves_no_session(tmp_path: Path):
    (tmp_path / "afile").write_text("not a directory")
    runs = tmp_path / "runs"
    failures = []
    for name, args, expected in _start_cases(tmp_path):
        goal = "raise dev accuracy of micro-gemma, -2 trials" if name == "negative trials in goal" else GOAL
        argv = ["start", goal, "--planner", "offline", *args]
        if "--runs-dir" not in args:
            argv += ["--runs-dir", str(runs)]
        result = runner.invoke(app, argv)
        out = result.output.strip()
        problems = []
        if result.exit_code != 1:
            problems.append(f"exit {result.exit_code}")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"traceback {type(result.exception).__name__}: {result.exception}")
        if "Traceback" in out or len(out.splitlines()) != 1 or not out.startswith("error:"):
            problems.append(f"not one error line: {out[:300]!r}")
        if expected.lower() not in out.lower():
            problems.append(f"no {expected!r} in {out[:200]!r}")
        if runs.exists() and any(runs.iterdir()):
            problems.append(f"left {sorted(p.name for p in runs.iterdir())}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert failures == []


def test_parallel_above_the_cores_is_capped_with_a_warning(tmp_path: Path):
    from agent.api import plan_goal, preflight

    cores = len(os.sched_getaffinity(0))
    plan = plan_goal(f"raise dev accuracy of micro-gemma, {cores + 6} trials, {cores + 3} at a time",
                     {"planner": "offline"})
    warnings = preflight(plan, tmp_path / "runs")
    assert plan.constraints.parallel == cores and any(f"{cores + 3} trials at once" in w for w in warnings)
    forced = plan_goal(f"raise dev accuracy of micro-gemma, {cores + 6} trials, {cores + 3} at a time",
                       {"planner": "offline"})
    assert preflight(forced, tmp_path / "runs", force_parallel=True) and forced.constraints.parallel == cores + 3


def test_trial_run_out_on_a_file(tmp_path: Path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": "builtin:micro-gemma"}))
    target = tmp_path / "out"
    target.write_text("x")
    result = runner.invoke(app, ["trial", "run", str(spec), "--out", str(target)])
    assert result.exit_code == 1 and "is a file" in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)


def test_damaged_session_json_is_listed_and_explained(tmp_path: Path):
    runs = tmp_path / "runs"
    good = runs / "s-20261125-100000"
    good.mkdir(parents=True)
    (good / "session.json").write_text(json.dumps({"id": good.name, "goal": "older", "constraints": {},
                                                   "status": {"state": "done"}}))
    broken = runs / "s-20261125-120000"
    broken.mkdir()
    (broken / "session.json").write_text('{"id": "s-20261125-120000", "goal": "trunc')
    listed = runner.invoke(app, ["list", "--runs-dir", str(runs)])
    assert listed.exit_code == 0 and "damaged" in listed.output and broken.name in listed.output
    for command in ("report", "resume", "pause", "status"):
        result = runner.invoke(app, [command, "--runs-dir", str(runs)])  # "latest" must not fall back to the older one
        assert result.exit_code == 1, command
        assert "damaged" in result.output and "Traceback" not in result.output, command
        named = runner.invoke(app, [command, broken.name, "--runs-dir", str(runs)])
        assert named.exit_code == 1 and "damaged" in named.output, command


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]\n'
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]\ncurrent-context: x\n")
    return kubeconfig


@pytest.mark.parametrize("case", ["refused", "garbage"])
def test_a_k8s_cluster_that_cannot_be_used_is_one_line_before_any_session(tmp_path: Path, monkeypatch, case: str):
    kubeconfig = _kubeconfig(tmp_path, "https://127.0.0.1:1")
    if case == "garbage":
        kubeconfig.write_text("clusters: [this is: not: a kubeconfig\n\x00")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["start", GOAL, "--planner", "offline", "--launcher", "k8s", "--runs-dir", str(runs)])
    out = result.output.strip()
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit)), out
    assert len(out.splitlines()) == 1 and out.startswith("error: --launcher k8s:"), out
    assert ("Connection refused" in out) if case == "refused" else ("kubeconfig" in out)
    assert not runs.exists() or not any(runs.iterdir())  # checked before the session, the plan not printed


def test_imports_of_files_that_are_not_what_they_claim(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OPENRL_AGENT_CACHE", str(tmp_path / "cache"))
    binary = tmp_path / "rows.jsonl"
    binary.write_bytes(bytes(range(256)) * 8)
    spider = tmp_path / "spider"
    (spider / "database" / "db1").mkdir(parents=True)
    (spider / "database" / "db1" / "db1.sqlite").write_bytes(b"not sqlite at all" * 64)
    (spider / "tables.json").write_text(json.dumps([{"db_id": "db1", "table_names_original": [],
                                                     "column_names_original": []}]))
    for name in ("dev.json", "train_spider.json"):
        (spider / name).write_text(json.dumps([{"db_id": "db1", "question": "q", "query": "SELECT 1"}]))
    for args, expected in ((["data", "import", "context", str(binary), "--name", "x"], "not a text file"),
                           (["data", "import", "spider", str(spider), "--name", "y"], "not a SQLite database")):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert expected in result.output and "Traceback" not in result.output


def test_a_session_where_every_trial_fails_exits_1_with_the_causes(tmp_path: Path):
    """The model passes preflight (a config and a weights file) but cannot load: every trial fails."""
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    (model / "model.safetensors").write_bytes(b"not safetensors")
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["start", "raise dev accuracy, 2 trials, 2 at a time", "--planner", "offline",
                                 "--model", str(model), "--runs-dir", str(runs)])
    assert result.exit_code == 1, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert "every trial failed; causes: 2 x model_load" in line and "Traceback" not in result.output


def test_a_planner_endpoint_that_never_answers_is_one_line_in_seconds(tmp_path: Path, monkeypatch):
    """The kernel completes the handshake for a listening socket that never accepts: the connection is
    taken, and no byte ever comes (a hung server). `start` must not wait out the LLM's 60 s."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/v1")
        runs = tmp_path / "runs"
        result = runner.invoke(app, ["start", GOAL, "--planner", "openai", "--runs-dir", str(runs)])
    out = result.output.strip()
    assert result.exit_code == 1 and len(out.splitlines()) == 1, out
    assert "took the connection but sent nothing in 5s" in out and "--planner offline" in out
    assert not runs.exists()
