"""`--plot FILE.png`: learning curves per trial and the best objective so far against trials."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def write_plot(facts: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI runs over ssh and in CI
    import matplotlib.pyplot as plt

    fig, (ax_reward, ax_acc, ax_best) = plt.subplots(1, 3, figsize=(16, 4.5))
    for trial_id, c in facts["curves"].items():
        pts = [
            (s, r)
            for s, r in zip(c["step"], c["reward_mean"], strict=True)
            if s is not None and r is not None
        ]
        if pts:
            ax_reward.plot(*zip(*pts, strict=True), label=trial_id, linewidth=1)
        evals = [e for e in c["eval"] if e.get("accuracy") is not None]
        if evals:
            ax_acc.errorbar([e["step"] for e in evals], [100 * e["accuracy"] for e in evals],
                            yerr=[100 * (e.get("stderr") or 0) for e in evals], marker="o", capsize=3,
                            label=trial_id, linewidth=1)  # fmt: skip
    ax_reward.set(title="Mean reward per step", xlabel="step", ylabel="reward")
    ax_acc.set(title="Dev execution accuracy", xlabel="step", ylabel="accuracy (%)")
    if facts["base"]:
        ax_acc.axhline(100 * facts["base"]["accuracy"], color="grey", linestyle="--", label="base policy")

    bsf = facts["best_so_far"]
    xs = list(range(1, len(bsf) + 1))
    ax_best.scatter(xs, [100 * b["accuracy"] for b in bsf], label="trial", color="tab:blue")
    ax_best.step(xs, [100 * b["best"] for b in bsf], where="post", label="best so far", color="tab:orange")
    if facts["base"]:
        ax_best.axhline(100 * facts["base"]["accuracy"], color="grey", linestyle="--", label="base policy")
    ax_best.set(title="Best so far", xlabel="succeeded trials, in launch order", ylabel="dev accuracy (%)")
    ax_best.set_xticks(xs, [b["trial_id"] for b in bsf], rotation=45 if len(xs) > 8 else 0)
    for ax in (ax_reward, ax_acc, ax_best):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(f"{facts['session']['id']}: {facts['session']['goal']}", fontsize="medium")
    fig.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
