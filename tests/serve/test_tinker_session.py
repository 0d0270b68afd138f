"""Research sessions through a Tinker-compatible endpoint (`--launcher tinker`): the plan searches only
what a client trial can run, preflight refuses an endpoint that is missing, silent or serving another
model, and a real session on `openrl-agent serve` runs its trials there and says why it has no
test-split confirmation."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("tinker")
from typer.testing import CliRunner  # noqa: E402

from agent import api  # noqa: E402
from agent.cli import app  # noqa: E402
from agent.plan import LAUNCHER_LIMITS  # noqa: E402
from agent.preflight import PreflightError, check_tinker_endpoint  # noqa: E402
from agent.report import build_report  # noqa: E402
from cluster.tinker_launcher import TinkerLauncher  # noqa: E402
from rl_core.serve.client_trial import check_supported  # noqa: E402
from rl_core.serve.local import free_port, running  # noqa: E402
from rl_core.serve.service import ServeSettings  # noqa: E402
from tools.leaderboard import leaderboard  # noqa: E402
from tools.search_space import SearchSpace  # noqa: E402

MODEL = "builtin:micro-gemma"
GOAL = "raise dev accuracy of micro-gemma"
TINY = """
trials = 2
parallel = 1
max_steps = 2
eval_limit = 4
[launcher]
name = "tinker"
endpoint = "{endpoint}"
[params.group_size]
fixed = 3
[params.prompts_per_step]
fixed = 2
[fixed]
"hparams.max_new_tokens" = 12
"hparams.sampling_rounds" = 1
"hparams.dynamic_sampling" = false
"eval.samples" = 2
"""


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINKER_TELEMETRY", "0")
        mp.setenv("TINKER_API_KEY", "tml-test")  # the trial processes inherit it
        mp.delenv("TINKER_BASE_URL", raising=False)
        with running(ServeSettings(models=[MODEL], state_dir=tmp_path_factory.mktemp("serve"), device="cpu")) as url:
            yield url


def _plan(tmp_path, endpoint: str, text: str = TINY, goal: str = GOAL, **overrides):
    config = tmp_path / "tinker.toml"
    config.write_text(text.format(endpoint=endpoint))
    return api.plan_goal(goal, {"config": str(config), "planner": "offline", **overrides})


def _every_corner(space: SearchSpace, base: dict):
    """The spec at the defaults and at every range end and choice (what preflight builds)."""
    defaults = space.defaults()
    yield space.build_spec(defaults, base=base)
    for name, param in space.params.items():
        for value in param.choices if param.kind == "categorical" else [param.low, param.high]:
            yield space.build_spec({**defaults, name: value}, base=base)


@pytest.mark.parametrize("model", [MODEL, "google/gemma-3-270m"])
def test_a_tinker_plan_searches_only_what_a_client_trial_can_run(tmp_path, model):
    plan = _plan(tmp_path, "http://127.0.0.1:1", "[launcher]\nname = \"tinker\"\nendpoint = \"{endpoint}\"\n",
                 model=model)
    space = SearchSpace.from_json(plan.search_space)
    base = {"trial_id": "t", "session": "s", "model": model}
    for spec in _every_corner(space, base):
        check_supported(spec)  # raises TrialError (bad_spec) for what the client trial refuses
    assert plan.search_space["params"]["lora_rank"]["choices"] == [8, 16, 32]
    assert plan.search_space["params"]["lora_rank"]["default"] == 16
    assert "kl_beta" not in plan.search_space["params"] and plan.constraints.branching is False
    notes = " | ".join(plan.notes)
    limits = LAUNCHER_LIMITS["tinker"]
    assert limits.pins["hparams.kl_beta"][1] in notes and limits.branching in notes
    assert (limits.lora_rank[1] in notes) == (model == MODEL)  # the built-ins' space offers rank 0
    assert (limits.pins["hparams.sft_steps"][1] in notes) == (model != MODEL)  # the pretrained preset's SFT stage
    local = api.plan_goal(GOAL, {"planner": "offline", "model": model})
    assert local.constraints.branching and 0.04 in local.search_space["params"]["kl_beta"]["choices"]


def test_a_pinned_full_fine_tune_becomes_lora_with_a_note(tmp_path):
    plan = _plan(tmp_path, "http://127.0.0.1:1", '[launcher]\nname = "tinker"\nendpoint = "{endpoint}"\n'
                 "[params.lora_rank]\nfixed = 0\n[params.kl_beta]\nfixed = 0.04\n")
    assert plan.search_space["fixed"]["hparams.lora_rank"] == LAUNCHER_LIMITS["tinker"].lora_rank[0]
    assert plan.search_space["fixed"]["hparams.kl_beta"] == 0.0
    assert any(n.startswith("lora_rank pinned to 16") for n in plan.notes)


def test_the_endpoint_comes_from_the_config_or_tinker_base_url(tmp_path, monkeypatch):
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    plan = _plan(tmp_path, "http://gpu-box:8000", parallel=3, trials=4)
    assert plan.launcher == {"name": "tinker", "endpoint": "http://gpu-box:8000"}
    launcher = api.make_launcher(plan, tmp_path / "runs" / "s-1")
    assert isinstance(launcher, TinkerLauncher) and launcher.endpoint == "http://gpu-box:8000"
    assert launcher.slots == 3
    monkeypatch.setenv("TINKER_BASE_URL", "http://from-env:9000/")
    plan = api.plan_goal(GOAL, {"planner": "offline", "launcher": "tinker"})
    assert plan.launcher == {"name": "tinker", "endpoint": "http://from-env:9000/"}  # kept for a resume
    assert api.make_launcher(plan, tmp_path / "runs" / "s-2").endpoint == "http://from-env:9000"


def test_preflight_refuses_a_tinker_plan_without_an_endpoint_before_a_session_exists(tmp_path, monkeypatch):
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["start", GOAL, "--launcher", "tinker", "--planner", "offline",
                                      "--runs-dir", str(runs)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs the endpoint" in lines[0] and "TINKER_BASE_URL" in lines[0], result.output
    assert not runs.exists()


def test_preflight_refuses_an_endpoint_that_does_not_answer(tmp_path):
    plan = _plan(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(PreflightError, match="did not answer within"):
        api.preflight(plan, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(PreflightError, match=r"did not answer within 0.5 s"):
            check_tinker_endpoint(url, MODEL, wait_s=0.5)
        assert time.monotonic() - t0 < 3


def test_preflight_refuses_a_model_the_endpoint_does_not_serve(endpoint, tmp_path):
    plan = _plan(tmp_path, endpoint, model="builtin:tiny-gemma")
    with pytest.raises(PreflightError, match=r"does not serve builtin:tiny-gemma; it serves builtin:micro-gemma"):
        api.preflight(plan, tmp_path / "runs")
    assert api.preflight(_plan(tmp_path, endpoint), tmp_path / "runs") == []


def test_preflight_checks_the_key_of_an_endpoint_that_has_one(tmp_path, monkeypatch):
    settings = ServeSettings(models=[MODEL], state_dir=tmp_path / "serve", device="cpu", api_key="tml-right")
    with running(settings) as url:
        monkeypatch.setenv("TINKER_API_KEY", "tml-wrong")
        with pytest.raises(PreflightError, match=r"refuses \$TINKER_API_KEY \(HTTP 401\)"):
            check_tinker_endpoint(url, MODEL)
        monkeypatch.setenv("TINKER_API_KEY", "tml-right")
        with pytest.raises(PreflightError, match="does not serve builtin:tiny-gemma"):
            check_tinker_endpoint(url, "builtin:tiny-gemma")
        monkeypatch.delenv("TINKER_API_KEY")  # the SDK may hold a stored key: the model is left to the trials
        check_tinker_endpoint(url, "builtin:tiny-gemma")


def test_a_research_session_runs_its_trials_through_the_endpoint(endpoint, tmp_path):
    plan = _plan(tmp_path, endpoint)
    runs = tmp_path / "runs"
    assert api.preflight(plan, runs) == []
    session = api.create_session(plan, runs)
    events: list[dict] = []
    lock = threading.Lock()

    def on_event(event: dict) -> None:
        with lock:
            events.append(event)

    t0 = time.monotonic()
    summary = api.run_session(session, on_event, poll_s=0.2)
    print(f"session through the endpoint: {time.monotonic() - t0:.1f} s")
    assert summary["state"] == "done" and summary["finished"] == 2 and summary["failed"] == 0, summary
    rows = leaderboard(session)
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert all(r["steps"] == 2 and r["dev_accuracy_after"] is not None and r["parent"] is None for r in rows), rows
    for row in rows:
        weights = (session / "trials" / row["trial_id"] / "tinker.json").read_text()
        assert "tinker://" in weights
    started = [e for e in events if e["type"] == "trial_started"]
    assert len(started) == 2 and all(e["params"].get("lora_rank", 16) >= 1 for e in started)
    reason = LAUNCHER_LIMITS["tinker"].confirm
    assert [e["reason"] for e in events if e["type"] == "confirm_skipped"] == [reason]
    assert summary["confirm"]["skipped"] == reason and not (session / "confirm" / "trials").exists()
    verdict = build_report(session, importances=False)["verdict"]
    assert verdict["source"] == "dev" and f"No test-split confirmation: {reason}." in verdict["text"]
