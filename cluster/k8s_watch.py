"""One kind of object (a session's Jobs, or its pods) kept current by LIST, then WATCH from that list.

- Raw JSON, models on demand: a watch over a thousand pods delivers thousands of events as trials
  finish, and building a client model costs ~100x parsing the JSON. Events are kept as dicts; a
  model is built when the launcher asks for the object, once per (uid, resourceVersion).
- Relists are rare: the watch asks for bookmarks, so a quiet watch that times out resumes from a
  recent resourceVersion; a dropped connection resumes from the last version seen. Only an ERROR
  event (410 Gone: the version is too old to resume from) or a broken answer relists.
- A relist replaces what it lists, so objects deleted while nobody watched are seen as gone; an
  object put (just created by this launcher) after the LIST began is never taken for gone.
- `progress` is the resourceVersion the cache is known current to (a LIST's, an event's, a
  bookmark's); compared with another object's resourceVersion it says whether this cache has seen
  everything written before it (etcd revisions: one counter across kinds).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from cluster.k8s_client import TRANSPORT_ERRORS

MISSING = object()  # an object the cache knows is gone (deleted, or absent from a complete list)
WATCH_S = 60  # the server ends each watch after this; bookmarks let the next one resume, not relist


def rv_int(value: Any) -> int:
    """A resourceVersion as a number (0 if it is not one: then nothing is taken as newer by it)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def rv_of(raw: dict[str, Any]) -> int:
    return rv_int((raw.get("metadata") or {}).get("resourceVersion"))


class Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone) or the server sent an ERROR event: relist."""


class Reflector:
    def __init__(self, api: client.ApiClient, list_fn: Callable[..., Any], namespace: str, selector: str,
                 model_type: str, index_label: str | None = None) -> None:
        self.api, self.list_fn, self.namespace, self.selector = api, list_fn, namespace, selector
        self.model_type, self.index_label = model_type, index_label
        self.lock = threading.Lock()
        self.objects: dict[str, Any] = {}  # name -> raw object, or MISSING once seen gone
        self.index: dict[str, set[str]] = {}  # index_label's value -> names ever seen with it
        self.models: dict[str, tuple[str, int, Any]] = {}  # name -> (uid, resourceVersion, model)
        self.version: str | None = None  # where the next watch resumes; None: relist first
        self.progress = 0
        self.synced = False
        self.lists = 0  # LISTs made, for tests and the soak
        self.error: str | None = None
        self._puts = 0
        self._put_at: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- reading ----------------------------------------------------------------------------
    def raw(self, name: str) -> Any:
        with self.lock:
            return self.objects.get(name)

    def model(self, name: str) -> Any:
        """The object as a client model, MISSING if gone, None if never seen."""
        raw = self.raw(name)
        return raw if raw is None or raw is MISSING else self.to_model(raw)

    def to_model(self, raw: dict[str, Any]) -> Any:
        meta = raw.get("metadata") or {}
        key = (meta.get("uid", ""), rv_of(raw))
        cached = self.models.get(meta.get("name", ""))
        if cached is not None and cached[:2] == key:
            return cached[2]
        model = self.api._ApiClient__deserialize(raw, self.model_type)  # the client's own, without a dumps
        self.models[meta.get("name", "")] = (*key, model)
        return model

    def indexed(self, value: str) -> list[Any]:
        """Raw objects (MISSING for gone ones) whose index_label is `value`."""
        with self.lock:
            return [self.objects.get(n) for n in self.index.get(value, ())]

    # ---- writing ----------------------------------------------------------------------------
    def put(self, model: Any) -> None:
        """An object this launcher just created or read (the watch may not have delivered it yet)."""
        raw = self.api.sanitize_for_serialization(model)
        with self.lock:
            self._puts += 1
            name = raw["metadata"]["name"]
            self._put_at[name] = self._puts
            known = self.objects.get(name)
            if not isinstance(known, dict) or rv_of(raw) > rv_of(known):
                self._store(name, raw)
                self.models[name] = (raw["metadata"].get("uid", ""), rv_of(raw), model)

    def merge(self, items: Iterable[dict[str, Any]], names: Iterable[str], version: str) -> None:
        """A partial LIST's answer (version: its resourceVersion): newer objects replace cached ones, and
        `names` the list would have shown but did not are gone."""
        with self.lock:
            shown = set()
            for raw in items:
                name = raw["metadata"]["name"]
                shown.add(name)
                known = self.objects.get(name)
                if not isinstance(known, dict) or rv_of(raw) >= rv_of(known):
                    self._store(name, raw)
            for name in set(names) - shown:
                self.objects[name] = MISSING

    def _store(self, name: str, raw: dict[str, Any]) -> None:
        self.objects[name] = raw
        if self.index_label:
            value = ((raw.get("metadata") or {}).get("labels") or {}).get(self.index_label)
            if value:
                self.index.setdefault(value, set()).add(name)

    # ---- list and watch ---------------------------------------------------------------------
    def relist(self) -> None:
        with self.lock:
            began = self._puts
        answer = self.list_fn(self.namespace, label_selector=self.selector, _preload_content=False,
                              _request_timeout=15)
        listed = json.loads(answer.data)
        version = listed["metadata"]["resourceVersion"]
        with self.lock:
            fresh = {raw["metadata"]["name"]: raw for raw in listed.get("items") or []}
            for name, known in self.objects.items():
                if name not in fresh:  # put after the LIST began: created since, absent but not gone
                    self.objects[name] = known if self._put_at.get(name, 0) > began else MISSING
            for name, raw in fresh.items():
                self._store(name, raw)
            self.version, self.progress = version, max(self.progress, rv_int(version))
            self.synced, self.error = True, None
            self.lists += 1

    def start(self) -> None:
        """Relist in the caller's thread (so a reader never sees an unsynced cache), then watch in a thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        try:
            self.relist()
        except Exception as exc:  # noqa: BLE001 - unreachable for now: the watcher relists when it can
            self.error = f"cannot list {self.model_type[2:]}s ({short(exc)}); retrying"
        self._thread = threading.Thread(target=self._run, name=f"openrl-k8s-watch-{self.model_type}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.version is None:
                    self.relist()
                self._watch_once()
            except TRANSPORT_ERRORS as exc:  # a dropped connection: resume from the last version seen
                self.error = f"watch of {self.model_type[2:]}s dropped ({short(exc)}); resuming"
                self._stop.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - 410 Gone, an error answer, a restarting server: relist
                self.error = f"watch of {self.model_type[2:]}s failed ({short(exc)}); relisting"
                self.version = None
                self._stop.wait(1.0)

    def _watch_once(self) -> None:
        answer = self.list_fn(self.namespace, label_selector=self.selector, watch=True,
                              resource_version=self.version, allow_watch_bookmarks=True, timeout_seconds=WATCH_S,
                              _preload_content=False, _request_timeout=WATCH_S + 30)
        try:
            for line in iter_resp_lines(answer):
                if self._stop.is_set():
                    return
                if line:
                    self.apply(json.loads(line))
        finally:
            answer.release_conn()

    def apply(self, event: dict[str, Any]) -> None:
        kind, raw = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise Gone(raw.get("message") or str(raw))
        version = (raw.get("metadata") or {}).get("resourceVersion")
        with self.lock:
            if kind != "BOOKMARK":  # a bookmark has no object, only a newer version to resume from
                name = raw["metadata"]["name"]
                known = self.objects.get(name)
                if kind == "DELETED":
                    self.objects[name] = MISSING
                    if known is None:
                        self._store(name, raw)
                        self.objects[name] = MISSING
                elif not isinstance(known, dict) or rv_of(raw) >= rv_of(known):
                    self._store(name, raw)
            self.version, self.progress = version, max(self.progress, rv_int(version))
            self.error = None


def short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"{status} {getattr(exc, 'reason', '')}".strip() if status else type(exc).__name__
