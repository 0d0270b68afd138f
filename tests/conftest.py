"""Suite-wide hooks."""

from __future__ import annotations

import os
import sys


def pytest_sessionfinish(session, exitstatus):
    """Leave without interpreter teardown once the results are printed.

    With torch, DuckDB and the gemma extra's native libraries all loaded in one long process, the
    interpreter's final teardown aborted (SIGABRT, exit 134) after "509 passed" on this machine,
    silently and not reproducibly per file. The verdict is already decided here, so exit with
    pytest's own status and skip the native destructors. Set OPENRL_TEST_TEARDOWN=1 to keep the
    normal teardown when investigating.
    """
    if os.environ.get("OPENRL_TEST_TEARDOWN") == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        session.config.add_cleanup(lambda: _exit(int(exitstatus)))
    else:
        _exit(int(exitstatus))


def _exit(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
