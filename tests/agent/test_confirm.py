"""The test-split verdict from per-question outcomes (agent/confirm.py)."""

from agent.confirm import build_verdict


def _outcomes(right: set[int], n: int = 400) -> dict[str, bool]:
    return {f"q{i}": i in right for i in range(n)}


def _row(tid: str, dev: float) -> dict:
    return {"trial_id": tid, "dev_accuracy_after": dev, "gain": 0.05, "gain_stderr": 0.01}


def test_a_dev_winner_that_holds_on_test():
    base = set(range(0, 400, 2))
    winner = base | set(range(1, 81, 2))  # +40 questions, none lost
    runner_up = base | {1, 3}
    v = build_verdict([_row("t0003", 0.6), _row("t0001", 0.55)],
                      {"base": _outcomes(base), "t0003": _outcomes(winner), "t0001": _outcomes(runner_up)})
    assert v["winner"] == "t0003" and v["holds"] and v["n"] == 400
    first = v["trials"][0]
    assert first["test_accuracy"] == 0.6 and first["diff"] == 0.1 and first["b_only"] == 40 and first["a_only"] == 0
    assert not v["trials"][1]["beats_base"]
    assert "beats the base policy on test" in v["text"] and "+10.0" in v["text"]


def test_a_dev_winner_that_does_not_hold_says_so_plainly():
    base = set(range(0, 400, 2))
    noisy = (base - {0, 2, 4}) | {1, 3, 5, 7}  # +1 net: noise
    v = build_verdict([_row("t0002", 0.62)], {"base": _outcomes(base), "t0002": _outcomes(noisy)})
    assert v["winner"] == "t0002" and not v["holds"]
    assert "does NOT hold on test" in v["text"]
    worse = build_verdict([_row("t0002", 0.62)], {"base": _outcomes(base), "t0002": _outcomes(base - {0, 2})})
    assert "no better than the base" in worse["text"]


def test_seed_retrains_report_mean_and_spread():
    base = set(range(0, 400, 2))
    outcomes = {"base": _outcomes(base), "t0001": _outcomes(base | set(range(1, 41, 2))),
                "t0001-seed1": _outcomes(base | set(range(1, 21, 2))),
                "t0001-seed2": _outcomes(base | set(range(1, 61, 2)))}
    v = build_verdict([_row("t0001", 0.6)], outcomes, seeds=["t0001-seed1", "t0001-seed2"])
    assert v["seeds"]["mean"] == 0.55 and v["seeds"]["sd"] > 0
    assert "2 fresh seed(s): test 55.0%" in v["text"]


def test_no_base_no_verdict():
    v = build_verdict([_row("t0001", 0.6)], {"base": None, "t0001": _outcomes({1})})
    assert v["winner"] is None and "no verdict" in v["text"]
