"""`openrl-agent cluster ...` through Typer's runner (the group is mounted on a bare app here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.cli import cluster as cluster_cli

app = typer.Typer()
app.add_typer(cluster_cli.app, name="cluster")
runner = CliRunner()


def write_spec(path: Path, trial_id: str, **extra) -> Path:
    spec = {"trial_id": trial_id, "session": "s-cli", "model": "builtin:micro-gemma",
            "budget": {"max_steps": 1, "max_seconds": 30}, **extra}
    path.write_text(json.dumps(spec))
    return path


def test_manifest_prints_an_applyable_list(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "t1.json", "t1")
    out = runner.invoke(app, ["cluster", "manifest", str(spec), "--namespace", "ml", "--gpus", "1",
                              "--gpu-type", "nvidia-l4", "--kueue-queue", "team"])
    assert out.exit_code == 0, out.output
    items = json.loads(out.output)["items"]
    assert [i["kind"] for i in items] == ["ConfigMap", "Job"]
    assert items[1]["spec"]["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def test_a_bad_spec_is_one_line_and_exit_1(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "bad.json", "t1", hparams={"group_size": 1})
    out = runner.invoke(app, ["cluster", "run", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 1
    assert "GRPO needs at least 2 completions per prompt" in out.output
    assert "Traceback" not in out.output


def test_run_refuses_duplicate_trial_ids(tmp_path: Path) -> None:
    a, b = write_spec(tmp_path / "a.json", "same"), write_spec(tmp_path / "b.json", "same")
    out = runner.invoke(app, ["cluster", "run", str(a), str(b), "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 1 and "share a trial_id (same)" in out.output


def test_check_with_a_missing_kubeconfig_says_the_fix(tmp_path: Path) -> None:
    out = runner.invoke(app, ["cluster", "check", "--kubeconfig", str(tmp_path / "none.yaml")])
    assert out.exit_code == 1
    assert "no kubeconfig at" in out.output and "KUBECONFIG" in out.output


@pytest.mark.slow
def test_run_two_real_trials_in_parallel(tmp_path: Path) -> None:
    small = {"hparams": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 16, "ppo_epochs": 1,
                         "warmup_steps": 0}, "budget": {"max_steps": 1, "max_seconds": 60, "checkpoint_every": 0},
             "eval": {"limit": 4, "samples": 0, "before": False}}
    specs = [str(write_spec(tmp_path / f"{t}.json", t, **small)) for t in ("a", "b")]
    out = runner.invoke(app, ["cluster", "run", *specs, "--slots", "2", "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    assert "2 trial(s) on 2 slot(s) x 1 thread(s)" in out.output
    assert out.output.count("succeeded") >= 4  # two status lines and two table rows
    for t in ("a", "b"):
        assert json.loads((tmp_path / "runs/s-cli/trials" / t / "result.json").read_text())["status"] == "succeeded"


@pytest.mark.k8s
def test_check_against_the_loopback_cluster(k8s_cluster) -> None:
    out = runner.invoke(app, ["cluster", "check", "--kubeconfig", str(k8s_cluster.kubeconfig)])
    assert out.exit_code == 0, out.output
    assert "credentials accepted" in out.output and "may create, watch and delete Jobs" in out.output
    assert "pullability is checked only when a pod starts" in out.output
    out = runner.invoke(app, ["cluster", "check", "--kubeconfig", str(k8s_cluster.kubeconfig), "--namespace", "nope"])
    assert out.exit_code == 1 and "kubectl create namespace nope" in out.output


def test_rbac_prints_a_role_with_every_verb_the_launcher_uses() -> None:
    import yaml

    from cluster.check import KUEUE_NEEDED, NEEDED

    out = runner.invoke(app, ["cluster", "rbac", "--namespace", "ml", "--service-account", "agent", "--kueue"])
    assert out.exit_code == 0, out.output
    role, binding = yaml.safe_load_all(out.output)
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert granted == set(NEEDED + KUEUE_NEEDED)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "agent", "namespace": "ml"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    out = runner.invoke(app, ["cluster", "rbac"])
    assert out.exit_code == 1 and "exactly one of --service-account, --user or --group" in out.output
