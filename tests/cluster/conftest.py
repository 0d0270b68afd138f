"""Backends for the launcher conformance suite, and trial specs for the fake runner."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.base import Launcher, TrialHandle
from cluster.local import SPEC_FILE, LocalLauncher

FAKE_TRIAL = Path(__file__).with_name("fake_trial.py")


def fake_spec(trial_id: str, session: str = "s-test", **fake: Any) -> dict[str, Any]:
    """A contract-shaped spec plus the fake runner's "fake" section (see fake_trial.py)."""
    return {"trial_id": trial_id, "session": session, "model": "builtin:micro-gemma", "seed": 0,
            "budget": {"max_steps": 1, "max_seconds": 30}, "fake": fake}


def fake_command(spec: dict[str, Any], trial_dir: Path) -> list[str]:
    return [sys.executable, str(FAKE_TRIAL), str(trial_dir / SPEC_FILE), "--out", str(trial_dir)]


@dataclass
class Backend:
    name: str
    make: Callable[[], Launcher]  # a fresh launcher instance over the same runs/cluster
    gone: Callable[[TrialHandle], bool]  # the trial's process / Job no longer exists


def local_backend(runs_dir: Path) -> Backend:
    from cluster import procs
    from cluster.outcome import read_json_file

    def gone(handle: TrialHandle) -> bool:
        state = read_json_file(Path(handle.ref) / "launcher.json")
        ident = procs.ProcIdentity(state["pid"], state["start_ticks"], state["boot_id"])
        return not procs.is_alive(ident)

    def make() -> Launcher:
        return LocalLauncher(runs_dir=runs_dir, slots=2, threads_per_trial=1, command=fake_command)

    return Backend("local", make, gone)


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The loopback control plane: reused from `k8s-test-cluster.sh run`, else started for this session."""
    from tests.cluster import k8s_support

    if os.environ.get("OPENRL_K8S_TEST_STATE"):
        yield k8s_support.K8sCluster(Path(os.environ["OPENRL_K8S_TEST_STATE"]))
        return
    reason = k8s_support.missing_reason()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("k8s")
    try:
        yield k8s_support.start_cluster(state)
    finally:
        k8s_support.stop_cluster(state)


@pytest.fixture(params=["local", pytest.param("k8s", marks=pytest.mark.k8s)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path / "runs")
    k8s_cluster = request.getfixturevalue("k8s_cluster")
    from tests.cluster.k8s_support import k8s_backend

    return k8s_backend(k8s_cluster, tmp_path, request.node.name)
