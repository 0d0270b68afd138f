import json
import os
from pathlib import Path

import pytest

from agent.api import create_session, latest_session, list_sessions, load_session, plan_goal, request_pause
from agent.session import SessionError, load_rounds, pause_requested, save_round, write_json_atomic


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


def test_create_list_latest_and_load(tmp_path: Path):
    runs = tmp_path / "runs"
    assert list_sessions(runs) == []
    with pytest.raises(SessionError, match="no sessions under"):
        latest_session(runs)
    first = create_session(plan_goal("raise accuracy, 3 trials", {}), runs)
    second = create_session(plan_goal("raise accuracy, 5 trials", {}), runs)
    assert first != second and first.name.startswith("s-")  # same second: a suffix keeps them apart
    assert {p.name for p in first.iterdir()} >= {"session.json", "study.journal", "trials"}
    data = load_session(second)
    assert data["id"] == second.name and data["constraints"]["trials"] == 5
    assert data["status"]["state"] == "created" and data["dir"] == str(second)
    assert [s["id"] for s in list_sessions(runs)] == [first.name, second.name]
    assert latest_session(runs) == second


def test_load_and_pause_of_a_non_session_say_what_to_do(tmp_path: Path):
    with pytest.raises(SessionError, match="is not a session"):
        load_session(tmp_path)
    with pytest.raises(SessionError, match="is not a session"):
        request_pause(tmp_path)


def test_pause_flag_and_rounds(tmp_path: Path):
    session = create_session(plan_goal("raise accuracy", {}), tmp_path / "runs")
    assert not pause_requested(session)
    request_pause(session)
    assert pause_requested(session)
    save_round(session, {"round": 2, "proposals": [1]})
    save_round(session, {"round": 1, "proposals": []})
    save_round(session, {"round": 2, "proposals": [2]})  # a round planned again after a crash replaces it
    assert load_rounds(session) == [{"round": 1, "proposals": []}, {"round": 2, "proposals": [2]}]


def test_atomic_write_leaves_the_old_file_when_serialising_fails(tmp_path: Path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"a": Boom()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind
    assert os.stat(path).st_size > 0


def test_session_ids_carry_a_random_part_and_the_latest_is_the_last_created(tmp_path):
    from agent.api import create_session, plan_goal
    from agent.session import latest_session, new_session_id

    ids = {new_session_id(tmp_path) for _ in range(20)}  # same second, one runs directory
    assert len(ids) == 20 and all(len(i.split("-")) == 4 and len(i.split("-")[3]) == 4 for i in ids)
    plan = plan_goal("raise dev accuracy of micro-gemma, 1 trial", {"planner": "offline"})
    first, second = create_session(plan, tmp_path), create_session(plan, tmp_path)
    assert first.name != second.name and latest_session(tmp_path) == second
