"""How a trial-spec field declares its contract: type, default, range or choices, whether the search
may vary it, and help; the one check every field's value goes through, with a message that names the
field and the fix. The fields themselves are declared in rl_core/spec.py. Torch-free.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A spec a user wrote is invalid; the message says which field and how to fix it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)


# --- field metadata ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Search:
    """A field's default search range: float/int `low..high` (optionally log or stepped) or `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] | None = None
    start: Any = None  # where the search starts (None: the field's default)


@dataclass(frozen=True)
class FieldInfo:
    """One spec field: where it lives, what it accepts, and how the search may vary it."""

    path: str  # "hparams.learning_rate"
    kind: str  # "float" | "int" | "bool" | "str" | "modules" | "object"
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    searchable: bool = False  # may a [params.<name>] table vary it
    search: Search | None = None  # its range in the default search space (None: fixed by default)

    @property
    def name(self) -> str:
        """The search-space name: the hparam's own name, `max_steps` for budget.max_steps."""
        return self.path.rsplit(".", 1)[-1]

    def check(self, value: Any) -> None:
        """Raise SpecError naming the field and the fix when `value` is not allowed."""
        if value is None:
            _check(self.nullable, f"{self.path} must be set (no null); default {self.default!r}")
            return
        if self.kind == "bool":
            _check(isinstance(value, bool), f"{self.path} must be true or false, got {value!r}")
        elif self.kind in ("int", "float"):
            is_num = isinstance(value, int) if self.kind == "int" else isinstance(value, int | float)
            what = "an integer" if self.kind == "int" else "a number"
            _check(is_num and not isinstance(value, bool), f"{self.path} must be {what}, got {value!r}")
            _check(math.isfinite(value), f"{self.path} must be a finite number, got {value!r}")
            if self.lo is not None:
                ok = value > self.lo if self.lo_open else value >= self.lo
                _check(ok, f"{self.path} must be {'>' if self.lo_open else '>='} {self.lo:g}, got {value!r}")
            if self.hi is not None:
                _check(value <= self.hi, f"{self.path} must be <= {self.hi:g}, got {value!r}")
        elif self.kind == "str":
            _check(isinstance(value, str), f"{self.path} must be a string, got {value!r}")
        elif self.kind == "modules":
            ok = (isinstance(value, str) and value.strip() != "") or (
                isinstance(value, list) and value and all(isinstance(m, str) and m for m in value))
            _check(ok, f'{self.path} must be "all-linear" or a non-empty list of module names, got {value!r}')
        if self.choices is not None:
            _check(value in self.choices, f"{self.path} must be one of {list(self.choices)}, got {value!r}")

    def describe_range(self) -> str:
        if self.choices is not None:
            return " | ".join(json.dumps(c) for c in self.choices)
        if self.kind in ("int", "float") and (self.lo is not None or self.hi is not None):
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
            hi = "" if self.hi is None else f"<= {self.hi:g}"
            return ", ".join(p for p in (lo, hi) if p)
        return {"bool": "true | false", "modules": '"all-linear" or a list of names'}.get(self.kind, "")


def spec_field(default: Any, help: str, *, kind: str | None = None, lo: float | None = None,
               hi: float | None = None, lo_open: bool = False, choices: tuple[Any, ...] | None = None,
               nullable: bool = False, searchable: bool = False, search: Search | None = None) -> Any:
    """A dataclass field carrying its contract; `search` implies `searchable`."""
    if kind is None:
        kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(default)]
    meta = {"kind": kind, "help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices,
            "nullable": nullable, "searchable": searchable or search is not None, "search": search}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


def unknown_key_message(key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f"did you mean {near[0]!r}?" if near else "valid keys: " + ", ".join(known)
    return f"unknown key {key!r}; {hint}"


# --- the field table --------------------------------------------------------------------------
