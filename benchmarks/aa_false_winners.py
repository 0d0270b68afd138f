"""A/A check of the report's decision rule: how often does it name a winner among identical policies?

Per-question solve rates come from a real A/A session (identical configurations, different seeds:
`openrl-agent start "A/A check of tiny-gemma, 4 trials, 2 at a time" --config examples/aa.toml`):
rate_i = the share of that session's trials whose final dev evaluation got question i right. A
simulated session draws the base and m trials from those same rates (so nothing is better than
anything), compares each trial with the base on the same questions (rl_core.stats.paired) and
applies the product's winner rule (rl_core.stats.winners, the one the confirmation and the report
call): the exact one-sided sign test of the discordant questions, Holm-corrected, below the level of
2 standard errors, with a gain of at least 2 paired SE. The share of simulated sessions with any
"winner" is the false-winner rate (target: at most 5%).

    .venv/bin/python benchmarks/aa_false_winners.py runs/<aa-session> --sessions 4000
    .venv/bin/python benchmarks/aa_false_winners.py --rates tests/fixtures/aa_dev_rates.json --save-rates FILE
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_core.sessiondir import trial_dir, trial_ids  # noqa: E402
from rl_core.stats import aa_false_winner_rate, paired, winners  # noqa: E402
from rl_core.trialdir import EVAL_FILE, read_jsonl  # noqa: E402


def rates_from_session(session_dir: Path) -> list[float]:
    finals = []
    for tdir in map(partial(trial_dir, session_dir), trial_ids(session_dir)):
        rows = read_jsonl(tdir / EVAL_FILE)
        if rows and rows[-1].get("outcomes"):
            finals.append(rows[-1]["outcomes"])
    if len(finals) < 2:
        raise SystemExit(f"{session_dir}: fewer than 2 trials with per-question outcomes")
    ids = sorted(set.intersection(*(set(f) for f in finals)))
    return [sum(bool(f[q]) for f in finals) / len(finals) for q in ids]


def session_check(session_dir: Path) -> None:
    """The real A/A session: its dev winner against each other identical trial, under the winner rule."""
    finals = {}
    for tdir in map(partial(trial_dir, session_dir), trial_ids(session_dir)):
        rows = read_jsonl(tdir / EVAL_FILE)
        if rows and rows[-1].get("outcomes"):
            finals[tdir.name] = rows[-1]["outcomes"]
    acc = {t: sum(o.values()) / len(o) for t, o in finals.items()}
    top = max(acc, key=acc.get)
    comps = {t: paired(finals[t], finals[top]) for t in finals if t != top}
    for t, c in comps.items():
        print(f"  dev winner {top} ({100 * acc[top]:.1f}%) - {t} ({100 * acc[t]:.1f}%): {100 * c.diff:+.1f} ± "
              f"{100 * c.se:.1f} points paired, McNemar p={c.p_mcnemar:.3g}")
    found = winners(comps)
    print(f"real A/A session {session_dir.name}: the dev winner is {'better than ' + ', '.join(sorted(found)) if found else 'better than none of the others'} "
          f"by the rule (exact sign test, Holm over {len(comps)} comparisons, 2 SE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session", nargs="?", help="an A/A session directory")
    parser.add_argument("--rates", help="a JSON list of per-question rates instead of a session")
    parser.add_argument("--save-rates", help="write the rates read from the session to this JSON file")
    parser.add_argument("--trials", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--sessions", type=int, default=4000)
    args = parser.parse_args()
    rates = json.loads(Path(args.rates).read_text()) if args.rates else rates_from_session(Path(args.session))
    if args.save_rates:
        Path(args.save_rates).write_text(json.dumps([round(r, 4) for r in rates]) + "\n")
    if args.session:
        session_check(Path(args.session))
    mixed = sum(0 < r < 1 for r in rates)
    print(f"{len(rates)} questions; mean rate {sum(rates) / len(rates):.3f}; {mixed} answered differently by "
          f"identical configurations")
    for m in args.trials:
        rate = aa_false_winner_rate(rates, trials=m, sessions=args.sessions)
        se = math.sqrt(rate * (1 - rate) / args.sessions)
        print(f"{m} trials compared: false-winner rate {100 * rate:.2f}% ± {100 * se:.2f} "
              f"({args.sessions} simulated sessions; target <= 5%)")


if __name__ == "__main__":
    main()
