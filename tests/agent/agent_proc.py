"""Runs (or resumes) a session in its own process, as `openrl-agent start/resume` would, with the
scripted trial runner; optionally SIGKILLs itself right after the N-th event of a type.

usage: agent_proc.py SESSION_DIR [TYPE:N]   (e.g. trial_finished:1)
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.api import load_session, run_session  # noqa: E402
from tests.agent.support import scripted_launcher  # noqa: E402


def main() -> None:
    session_dir = Path(sys.argv[1])
    kind, _, nth = (sys.argv[2] if len(sys.argv) > 2 else "none:0").partition(":")
    seen = 0

    def on_event(event: dict) -> None:
        nonlocal seen
        print("event", event["type"], event.get("trial_id", ""), flush=True)
        if event["type"] == kind:
            seen += 1
            if seen == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    parallel = load_session(session_dir)["constraints"]["parallel"]
    summary = run_session(session_dir, on_event, launcher=scripted_launcher(session_dir, parallel), poll_s=0.05)
    print("summary", summary["state"], summary["reason"], summary["finished"], flush=True)


if __name__ == "__main__":
    main()
