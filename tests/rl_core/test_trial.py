"""End-to-end trials on builtin:micro-gemma with the real sql_env (DuckDB) environment."""

import json
import math

import pytest
import torch

from rl_core.spec import TrialSpec
from rl_core.trial import classify, main, run_trial
from rl_core.trialdir import SCHEMA_VERSION, result_metrics

METRIC_KEYS = ("step", "reward_mean", "reward/execution_match", "reward/length_penalty", "batch_accuracy", "kl",
               "entropy", "clip_frac", "completion_len", "grad_norm", "loss", "t_generate", "t_score", "t_train", "lr",
               "elapsed_s")
SANDBOX_STATUSES = {"ok", "syntax_error", "schema_error", "timeout", "too_many_rows", "forbidden", "runtime_error"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores shared by many processes: one torch thread avoids spin-waiting on busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def micro_spec(**budget) -> dict:
    return {
        "trial_id": "micro", "model": "builtin:micro-gemma",
        # A short SFT stage makes the random micro model write SELECT ... so DuckDB really runs it;
        # the length term keeps rewards varied so every group carries a gradient.
        "hparams": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 16, "learning_rate": 1e-3,
                    "warmup_steps": 0, "dynamic_sampling": False, "sft_steps": 30, "sft_batch_size": 8,
                    "sft_learning_rate": 1e-2, "temperature": 1.0},
        "reward": {"components": {"execution_match": 1.0, "length_penalty": 1.0},
                   "params": {"length_free_chars": 0, "length_scale_chars": 1000}},
        "budget": {"max_seconds": 300, "checkpoint_every": 1, **budget},
        "eval": {"limit": 6, "samples": 8},
    }


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_step_trial_then_resume_writes_the_contract_directory(tmp_path):
    out = tmp_path / "trial"
    first = run_trial(micro_spec(max_steps=1), out)
    assert first["status"] == "succeeded", first["error"]
    step1 = torch.load(out / "checkpoints" / "step_1.pt", weights_only=False)["model"]

    result = run_trial(micro_spec(max_steps=2), out, resume=True)  # extend the budget: resume at step 1
    assert result["status"] == "succeeded", result["error"]
    assert json.loads((out / "result.json").read_text()) == result
    m = result_metrics(result)
    assert result["schema_version"] == SCHEMA_VERSION and m.steps == 2 and m.eval.n == 6 and m.eval.split == "dev"
    for value in (m.eval.accuracy_before, m.eval.accuracy_after, m.eval.stderr_after, m.eval.gain, m.wall_s,
                  m.reward_mean_last):
        assert isinstance(value, float) and math.isfinite(value), m
    assert TrialSpec.from_json(result["spec"]) == TrialSpec.load(out / "spec.json")

    rows = lines(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in METRIC_KEYS:
            assert isinstance(row[key], int | float) and math.isfinite(row[key]), key
    assert [r["step"] for r in lines(out / "eval.jsonl")] == [0, 1, 2]  # before, after run 1, after run 2

    # the GRPO step after the checkpoint changed the weights that were saved
    from safetensors.torch import load_file

    saved = load_file(out / "adapter" / "model.safetensors")
    changed = [n for n, w in step1.items() if n in saved and not torch.equal(saved[n], w)]
    assert changed, "step 2 did not change any weight"

    # rewards came from executing SQL in DuckDB: DuckDB's own error messages are in the verdicts
    samples = lines(out / "samples.jsonl")
    assert samples and {s["status"] for s in samples} <= SANDBOX_STATUSES
    executed = [s for s in samples if s["sql"] is not None]
    assert executed, "no sample reached the sandbox"
    assert any("Error" in (s["error"] or "") or s["status"] == "ok" for s in executed)
    for key in ("step", "example_id", "question", "completion", "sql", "status", "correct", "reward", "error"):
        assert key in samples[0]


def test_bad_spec_fails_before_any_work(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trial_id": "bad", "hparams": {"group_size": 1}}))
    assert main([str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "at least 2 completions per prompt" in capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "failed" and result["error"]["kind"] == "bad_spec"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.json"]


def test_bad_reward_and_missing_model_are_classified(tmp_path):
    bad_reward = run_trial({"trial_id": "r", "reward": {"components": {"vibes": 1.0}}}, tmp_path / "r")
    assert bad_reward["error"]["kind"] == "bad_spec" and "vibes" in bad_reward["error"]["message"]
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
    import torch

    if not torch.cuda.is_available():  # CPU machines (CI): asking for a GPU is the spec's error, before the model loads
        no_gpu = run_trial({"trial_id": "g", "model": str(tmp_path / "no-such-model"), "device": "cuda"}, tmp_path / "g")
        assert no_gpu["error"]["kind"] == "bad_spec" and "torch sees no CUDA GPU" in no_gpu["error"]["message"]
    missing = run_trial({"trial_id": "m", "model": str(tmp_path / "no-such-model")}, tmp_path / "m")
    assert missing["status"] == "failed" and missing["error"]["kind"] == "model_load"
    try:
        import vllm  # noqa: F401
    except ImportError:
        no_vllm = run_trial({"trial_id": "v", "model": "builtin:micro-gemma", "hparams": {"engine": "vllm"}},
                            tmp_path / "v")
        assert no_vllm["error"]["kind"] == "bad_spec" and "gpu extra" in no_vllm["error"]["message"]


def test_error_classification():
    from rl_core.trainer import NonFiniteLoss
    from rl_core.trial import TrialError, _Stop

    assert classify(NonFiniteLoss("loss became nan"))[0] == "nan_loss"
    assert classify(MemoryError())[0] == "oom"
    assert classify(RuntimeError("CUDA out of memory. Tried to allocate"))[0] == "oom"
    assert classify(_Stop())[0] == "timeout"
    assert classify(TrialError("model_load", "x")) == ("model_load", "x")
    kind, message = classify(KeyError("boom"))
    assert kind == "crash" and "KeyError" in message


def test_long_phases_print_a_heartbeat_and_short_ones_stay_quiet(capsys):
    from rl_core.runner import Ticker

    quiet = Ticker("eval step 0 greedy")  # 10 s between lines: a short phase prints nothing
    quiet(64, 400)
    assert capsys.readouterr().out == ""
    loud = Ticker("sft step", every_s=0.0)
    loud(3, 30, "loss=0.500")
    loud(30, 30, "loss=0.100")  # the phase's own summary line follows; no heartbeat for the last
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("sft step 3/30 loss=0.500 t=")


def test_entropy_bonus_trains_end_to_end(tmp_path):
    """The hyperparameter added through the spec's one owner reaches the loss (entropy_coef)."""
    spec = micro_spec(max_steps=1)
    spec["hparams"]["entropy_coef"] = 0.05
    result = run_trial(spec, tmp_path / "t")
    assert result["status"] == "succeeded", result["error"]
    assert result["spec"]["hparams"]["entropy_coef"] == 0.05
    (row,) = lines(tmp_path / "t" / "metrics.jsonl")
    assert row["entropy"] > 0 and math.isfinite(row["loss"])


def test_report_split_is_evaluated_whole_before_and_after_only(tmp_path):
    """A recipe tuned on dev reports on test in the same run: eval.jsonl keeps the dev curve,
    report.jsonl the test split's before/after with per-question outcomes, result.json the paired gain."""
    from rl_core.stats import paired

    spec = micro_spec(max_steps=2)
    spec["eval"].update({"every_steps": 1, "subset": 3, "report_split": "test"})
    out = tmp_path / "t"
    result = run_trial(spec, out)
    assert result["status"] == "succeeded", result["error"]
    evals, reports = lines(out / "eval.jsonl"), lines(out / "report.jsonl")
    assert [(r["step"], r["split"], r["n"]) for r in evals] == [(0, "dev", 6), (1, "dev", 3), (2, "dev", 6)]
    assert [(r["step"], r["split"]) for r in reports] == [(0, "test"), (2, "test")]
    assert reports[0]["n"] == reports[1]["n"] == len(reports[0]["outcomes"]) > 6  # the whole split
    m, r = result_metrics(result), result_metrics(result).report
    assert m.eval.split == "dev" and r.split == "test" and r.n == reports[1]["n"]
    assert r.accuracy_before == reports[0]["accuracy"] and r.accuracy_after == reports[1]["accuracy"]
    assert r.gain == round(reports[1]["accuracy"] - reports[0]["accuracy"], 4)
    assert r.gain_stderr_paired == round(paired(reports[0]["outcomes"], reports[1]["outcomes"]).se, 4)
