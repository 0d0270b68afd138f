import json
import math
from pathlib import Path

import optuna

from agent.session import open_study, write_json_atomic
from tools.leaderboard import leaderboard


def _trial(study: optuna.Study, session: Path, params: dict, result: dict | None, rationale: str, state: str):
    study.enqueue_trial(params, user_attrs={"rationale": rationale, "round": 1, "planner": "offline"})
    trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    tid = f"t{trial.number:04d}"
    trial.set_user_attr("trial_id", tid)
    if result is not None:
        write_json_atomic(session / "trials" / tid / "result.json", {"trial_id": tid, **result})
    if state == "complete":
        trial.set_user_attr("metrics", result["metrics"])
        study.tell(trial, result["metrics"]["dev_accuracy_after"])
    elif state == "fail":
        trial.set_user_attr("error", result["error"])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return tid


def test_rows_rank_succeeded_first_with_gain_stderr(tmp_path: Path):
    session = tmp_path / "s-1"
    study = open_study(session)
    metrics = {"dev_accuracy_before": 0.5, "dev_accuracy_after": 0.6, "dev_n": 400, "dev_stderr_after": 0.0245,
               "steps": 10, "wall_s": 12.0}
    low = _trial(study, session, {"learning_rate": 1e-4}, {"status": "succeeded", "metrics": metrics,
                 "adapter_path": "adapter", "spec": {"reward": {"components": {"execution_match": 1.0}}}},
                 "baseline", "complete")
    high = _trial(study, session, {"learning_rate": 2e-4}, {"status": "succeeded",
                  "metrics": {**metrics, "dev_accuracy_after": 0.7}, "spec": {}}, "higher lr", "complete")
    failed = _trial(study, session, {"learning_rate": 9e-4}, {"status": "failed", "metrics": {},
                    "error": {"kind": "nan_loss", "message": "NaN at step 3"}}, "bold", "fail")
    running = _trial(study, session, {"learning_rate": 5e-5}, None, "careful", "running")

    rows = leaderboard(session)
    assert [r["trial_id"] for r in rows] == [high, low, running, failed]
    assert [r["rank"] for r in rows] == [1, 2, None, None]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "running", "failed"]
    top = rows[0]
    assert top["score"] == 0.7 and abs(top["gain"] - 0.2) < 1e-9
    assert math.isclose(top["gain_stderr"], math.sqrt(0.0245**2 + 0.5 * 0.5 / 400))
    assert top["rationale"] == "higher lr" and top["round"] == 1 and top["key_params"] == {"learning_rate": 2e-4}
    assert rows[1]["adapter_path"].endswith(f"trials/{low}/adapter")
    assert rows[1]["reward_summary"] == "execution_match 1"
    assert rows[3]["error"] == {"kind": "nan_loss", "message": "NaN at step 3"}
    # A pause leaves the trial RUNNING in the study; the cancelled marker shows it.
    (session / "trials" / running).mkdir(parents=True)
    (session / "trials" / running / "cancelled").write_text("{}")  # rl_core.trialdir's marker
    assert leaderboard(session)[2]["status"] == "interrupted"


def test_a_session_without_a_study_has_no_rows(tmp_path: Path):
    assert leaderboard(tmp_path) == []


def test_a_session_written_with_result_schema_2_still_reports(tmp_path: Path):
    """Runs from before the split-named schema: result.json at schema 2 (dev_* keys) and the study's
    stored metrics in that shape; the leaderboard and the report read both through the typed schema."""
    from agent.report.facts import build_report

    session = tmp_path / "s-old"
    study = open_study(session)
    old = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "result_schema2.json").read_text())
    tid = _trial(study, session, {"learning_rate": 1e-4}, old, "from an old run", "complete")
    (session / "trials" / tid / "adapter").mkdir()
    row = leaderboard(session)[0]
    assert (row["trial_id"], row["status"], row["score"]) == (tid, "succeeded", 0.61)
    assert (row["dev_accuracy_before"], row["dev_accuracy_after"], row["gain"], row["gain_stderr"]) == (
        0.47, 0.61, 0.14, 0.018)
    assert (row["steps"], row["wall_s"], row["steps_total"]) == (120, 455.2, 120)
    best = build_report(session, importances=False)["best"]
    assert (best["accuracy"], best["stderr"], best["base"], best["gain"], best["steps"]) == (0.61, 0.0244, 0.47,
                                                                                           0.14, 120)
