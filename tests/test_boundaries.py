"""The package boundaries of DESIGN.md, read from the code: agent, cluster and tools import from
rl_core only its torch-free contract owners; sql_env imports none of the other packages; tools
never imports agent. (The `agent/cli` commands that train or build a model in the user's own
process, `trial run`, `model build` and `serve`, import rl_core inside the command.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = {"spec", "fields", "presets", "trialdir", "sessiondir", "stats", "catalogue"}
OWN_PROCESS_COMMANDS = {"agent/cli/trial.py", "agent/cli/model.py", "agent/cli/serve.py"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rl_core":  # from rl_core import trialdir
                names.update(f"rl_core.{a.name}" for a in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_agent_cluster_and_tools_import_only_rl_cores_contract_owners():
    bad = []
    for package in ("agent", "cluster", "tools"):
        for path in _files(package):
            rel = str(path.relative_to(ROOT))
            if rel in OWN_PROCESS_COMMANDS:
                continue
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "rl_core" and (len(parts) < 2 or parts[1] not in CONTRACT):
                    bad.append(f"{rel}: {name}")
                if parts[0] == "torch":
                    bad.append(f"{rel}: {name}")
    assert bad == []


def test_sql_env_and_tools_stay_below_the_agent():
    bad = []
    for package, forbidden in (("sql_env", {"agent", "rl_core", "tools", "cluster"}), ("tools", {"agent"})):
        for path in _files(package):
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in _imports(path) if n.split(".")[0] in forbidden]
    assert bad == []


def test_the_contract_owners_are_torch_free():
    for module in CONTRACT:
        names = _imports(ROOT / "rl_core" / f"{module}.py")
        assert not any(n.split(".")[0] in ("torch", "transformers", "peft") for n in names), module
        others = {n.split(".")[1] for n in names if n.startswith("rl_core.") and len(n.split(".")) > 1}
        assert others <= CONTRACT, (module, others - CONTRACT)
