"""A session's settings outside the goal text: the `--config` file (TOML or JSON) and the
experiment-tracking table. Errors are GoalErrors: one line that says what to change."""

from __future__ import annotations

from typing import Any

from agent.plan import GoalError
from tools.tracking import BACKENDS, missing_backends

__all__ = ["GoalError", "read_config", "tracking_settings"]


_TRACKING_KEYS = ("backends", "tensorboard_dir", "mlflow_uri")


def tracking_settings(*values: Any) -> dict[str, Any]:
    """The experiment trackers to mirror trials to, from the config's `[tracking]` table and/or the
    `--track` flag (later values win key by key). Each value is "tensorboard,mlflow" (or "none"), a
    list of backend names, or a table {backends, tensorboard_dir, mlflow_uri}. {} means none;
    GoalError for an unknown backend or key, or a backend whose library is not installed."""
    settings: dict[str, Any] = {}
    for value in values:
        if value is None:
            continue
        table = dict(value) if isinstance(value, dict) else {"backends": value}
        unknown = set(table) - set(_TRACKING_KEYS)
        if unknown:
            raise GoalError(f"tracking setting {sorted(unknown)[0]!r} is unknown; use {', '.join(_TRACKING_KEYS)}")
        settings.update(table)
    backends = _backends(settings.get("backends", []))
    if not backends:
        return {}
    for key in ("tensorboard_dir", "mlflow_uri"):
        if settings.get(key) is not None and not (isinstance(settings[key], str) and settings[key]):
            raise GoalError(f"tracking {key} must be a non-empty string, got {settings[key]!r}")
    if missing := missing_backends(backends):
        raise GoalError(f"tracking: {missing[0]}")
    return {"backends": backends, **{k: str(settings[k]) for k in _TRACKING_KEYS[1:] if settings.get(k)}}


def _backends(value: Any) -> list[str]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise GoalError(f"tracking backends must be a list of names ({', '.join(BACKENDS)}), got {value!r}")
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["none"]:
        return []
    for name in names:
        if name not in BACKENDS:
            raise GoalError(f"tracking backend {name!r} is unknown; use {', '.join(BACKENDS)} (comma-separated)")
    return list(dict.fromkeys(names))


def read_config(path: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(option keys, search-space sections) of a TOML or JSON config file."""
    import json
    import tomllib
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        raise GoalError(f"config file {path} not found; check the --config path") from None
    except UnicodeDecodeError:
        raise GoalError(f"config file {path} is not a text file (TOML or JSON); check the --config path") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise GoalError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise GoalError(f"{path} must hold a table/object of settings")
    space = {k: data.pop(k) for k in ("params", "fixed") if k in data}
    data.pop("config", None)
    if isinstance(data.get("launcher"), dict):  # [launcher] name = "k8s", namespace = ...
        table = dict(data.pop("launcher"))
        data["launcher"] = table.pop("name", "local")
        extra = data.get("launcher_options", {})
        if not isinstance(extra, dict):
            raise GoalError(f"{path}: launcher_options must be a table of settings ([launcher] keys), got {extra!r}")
        data["launcher_options"] = {**table, **extra}
    return data, space
