"""The research report: leaderboard, best trial, rounds, importances, failures and curves of one session.

`build_report(session_dir)` gathers the facts once as a JSON-serialisable dict; `render_terminal`,
`render_markdown` and `write_plot` only format them, so every form states the same facts.
"""

from agent.report.facts import build_report
from agent.report.markdown import render_markdown
from agent.report.plot import write_plot
from agent.report.terminal import leaderboard_table, render_terminal, report_renderable

__all__ = [
    "build_report",
    "leaderboard_table",
    "render_markdown",
    "render_terminal",
    "report_renderable",
    "write_plot",
]
