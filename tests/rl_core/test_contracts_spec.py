"""The trial spec's fields are used, not only declared: each is read somewhere in rl_core outside
rl_core/spec.py (hparams.entropy_coef was validated, searchable and documented for 25 commits before
anything read it), and spec.LOSS_TYPES is exactly the set of losses rl_core/grpo.py implements."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import torch

from rl_core import grpo
from rl_core.spec import FIELDS, LOSS_TYPES

ROOT = Path(__file__).resolve().parents[2]
SECTION_CLASS = {"": "TrialSpec", "hparams": "HParams", "reward": "RewardConfig", "budget": "Budget",
                 "eval": "EvalConfig", "init_from": "InitFrom"}
# Fields whose reader is outside rl_core, each with the file and the code that reads it (checked below,
# so an exemption cannot outlive its reader).
READ_ELSEWHERE = {
    "session": ("cluster/base.py", 'spec.get("session")'),  # the launchers place the trial directory by it
    "budget.eval_seconds": ("rl_core/spec.py", "self.eval_seconds"),  # Budget.wall_limit_s, the launchers' limit
}


def spec_reads(source: str) -> set[str]:
    """Spec fields ("hparams.lr", "seed") a module reads as attributes of a value that is their section:
    `spec.hparams.lr`, `hp.lr` after `hp = spec.hparams`, `self.hp.lr` after `self.hp = hp`, or a
    parameter annotated with the section's class (`hp: HParams`)."""
    tree = ast.parse(source)
    alias: dict[str, str] = {}  # local or attribute name -> the section it holds
    for _ in range(3):  # to a fixed point: an alias may be assigned from another alias
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and (section := _section_of(node.value, alias)) is not None:
                for target in node.targets:
                    if isinstance(target, ast.Name | ast.Attribute):
                        alias[target.id if isinstance(target, ast.Name) else target.attr] = section
            elif isinstance(node, ast.arg) and node.annotation is not None:
                annotation = ast.unparse(node.annotation).strip("'\"").split("|")[0].strip()
                for section, cls in SECTION_CLASS.items():
                    if annotation == cls:
                        alias[node.arg] = section
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            section = _section_of(node.value, alias)
            if section is not None:
                out.add(f"{section}.{node.attr}" if section else node.attr)
    return out


def _section_of(value: ast.AST, alias: dict[str, str]) -> str | None:
    if isinstance(value, ast.Name):
        return "" if value.id == "spec" else alias.get(value.id)
    if isinstance(value, ast.Attribute):
        if value.attr == "spec":
            return ""
        if value.attr in SECTION_CLASS:
            return value.attr
        return alias.get(value.attr)
    return None


def test_every_spec_field_is_read_in_rl_core_outside_spec():
    read: set[str] = set()
    for path in sorted((ROOT / "rl_core").rglob("*.py")):
        if path.name != "spec.py":
            read |= spec_reads(path.read_text())
    unread = sorted(set(FIELDS) - read - set(READ_ELSEWHERE))
    assert unread == [], f"declared in rl_core/spec.py but read nowhere in rl_core: {unread}"


@pytest.mark.parametrize("field", sorted(READ_ELSEWHERE))
def test_fields_read_outside_rl_core_are_read_where_the_exemption_says(field):
    path, code = READ_ELSEWHERE[field]
    assert field in FIELDS
    assert code in (ROOT / path).read_text(), f"{field}: {path} no longer reads it ({code}); update READ_ELSEWHERE"


def test_the_reader_sees_each_way_of_reading_a_field_and_nothing_else():
    source = '''
def run(spec, hp: HParams, budget: "Budget | None"):
    a = spec.seed
    b = spec.hparams.learning_rate
    h = spec.hparams
    c = h.group_size
    self.hp = h
    d = self.hp.warmup_steps
    e = hp.top_p + budget.max_steps
    spec.eval.limit = 3          # a write is not a read
    f = policy.model             # not a spec section
'''
    assert spec_reads(source) == {"seed", "hparams", "hparams.learning_rate", "hparams.group_size",
                                  "hparams.warmup_steps", "hparams.top_p", "budget.max_steps", "eval"}


def test_loss_types_are_exactly_the_losses_grpo_implements():
    assert set(LOSS_TYPES) == set(grpo.LOSSES)  # both ways: no choice without a loss, no loss without a choice
    # Each is its own aggregation: on sequences of unequal length they all differ.
    loss_BT = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 0.0, 0.0, 0.0]])
    mask_BT = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    sizes = grpo.BatchSizes(sequences=2, tokens=5, max_new_tokens=8)
    values = {name: float(grpo.LOSSES[name](loss_BT, mask_BT, sizes)) for name in LOSS_TYPES}
    assert values == pytest.approx({"grpo": (2.5 + 5) / 2, "dr_grpo": 15 / 16, "dapo": 15 / 5})


def test_grpo_docstring_states_the_loss_the_code_computes():
    doc = grpo.__doc__
    listed = re.findall(r"^ {7}(\w+)\s+: ", doc, flags=re.M)
    assert listed == list(grpo.LOSSES), "step 5 of rl_core/grpo.py's docstring lists the aggregations"
    (l_t,) = [line for line in doc.splitlines() if line.strip().startswith("l_t")]
    weights = [p.name for p in inspect.signature(grpo.grpo_loss).parameters.values()
               if p.kind is p.KEYWORD_ONLY and isinstance(p.default, float)]
    assert weights == ["kl_beta", "entropy_coef"]
    for weight in weights:  # every weighted term grpo_loss adds is in the formula
        assert f"{weight} *" in l_t, f"{weight} is a term of grpo_loss but not of the docstring's l_t: {l_t.strip()}"
