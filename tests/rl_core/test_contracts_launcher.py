"""Where a launcher is passed, it is typed as cluster.base.Launcher (the protocol), not Any."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Modules done so far; agent/confirm.py (_wait) and agent/api.py (run_session) join when they are typed.
TYPED = ["agent/api.py", "agent/collecting.py", "agent/confirm.py", "agent/graph.py", "agent/launching.py",
         "agent/loop.py", "cluster/base.py"]


def untyped_launchers(source: str) -> list[str]:
    """Parameters named like a launcher (`launcher`, `confirm_launcher`) not annotated `Launcher`
    (or `Launcher | None`)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.arg.endswith("launcher"):
                    annotation = ast.unparse(arg.annotation).strip("'\"") if arg.annotation else ""
                    if annotation not in ("Launcher", "Launcher | None"):
                        out.append(f"{node.name}({arg.arg}: {annotation or 'no annotation'})")
    return out


@pytest.mark.parametrize("module", TYPED)
def test_launchers_are_typed_with_the_protocol(module):
    assert untyped_launchers((ROOT / module).read_text()) == []


def test_the_check_names_an_untyped_launcher():
    source = ("def a(launcher: Launcher): ...\ndef b(x, launcher: Any = None): ...\n"
              "def c(*, confirm_launcher): ...\ndef d(launcher: 'Launcher | None' = None): ...\n")
    assert untyped_launchers(source) == ["b(launcher: Any)", "c(confirm_launcher: no annotation)"]


def test_build_graph_resolves_its_launcher_to_the_protocol():
    import typing

    from agent.graph import build_graph
    from cluster.base import Launcher

    assert typing.get_type_hints(build_graph)["launcher"] is Launcher
