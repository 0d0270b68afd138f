"""Connecting to a cluster, pacing requests, and turning client failures into one sentence that says the fix.

The kubernetes client raises a zoo of errors (ConfigException, MaxRetryError, ApiException with a
JSON body, exec-plugin failures); `explain` maps the ones a user can cause to a LauncherError.

`Throttle` sits under every request of an ApiClient: a token bucket (client-go's QPS/Burst) so a
session with hundreds of trials cannot flood the API server, and retries of the answers that mean
"later" (429 Too Many Requests, 500/502/503/504), honouring Retry-After, with exponential backoff.
Transport failures (a connection reset, a read timeout, an answer cut off mid-body while a control
plane restarts or upgrades) mean "later" too and are retried on the same schedule; what is still
failing after the retries reaches the caller as a urllib3 error, which the launcher treats as
"try again next poll", never as the trial's outcome.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3 import Retry
from urllib3.exceptions import HTTPError as Urllib3Error

from cluster.base import LauncherError

REQUEST_TIMEOUT_S = 15
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# urllib3 retries one failed connection (fail in seconds when the server is down); answers are the
# Throttle's to retry, so urllib3 must not also retry a 429 on its own schedule.
URLLIB3_RETRIES = Retry(total=1, status=0, redirect=0, respect_retry_after_header=False)
# What a dropped or stalled connection raises from a request (ProtocolError, ReadTimeoutError,
# MaxRetryError, ... are urllib3 HTTPErrors; a bare reset can surface as an OSError).
TRANSPORT_ERRORS = (Urllib3Error, OSError)


class Throttle:
    """Rate limit and retry every request an ApiClient makes (install with `throttle.install(api)`)."""

    def __init__(self, qps: float = 20.0, burst: int = 40, retries: int = 5, max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.qps, self.burst, self.retries, self.max_backoff_s = qps, burst, retries, max_backoff_s
        self.clock, self.sleep = clock, sleep
        self.tokens = float(burst)
        self.updated = clock()
        self.lock = threading.Lock()
        self.requests = 0  # sent, retries included
        self.retried = 0

    def take(self) -> None:
        """Wait for a token (refilled at qps, at most burst saved up)."""
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.qps)
            self.updated = now
            self.tokens -= 1.0
            wait_s = -self.tokens / self.qps if self.tokens < 0 else 0.0
            self.requests += 1
        if wait_s > 0:
            self.sleep(wait_s)

    def try_take(self) -> bool:
        """A token if one is saved up, else False at once (for work that can wait for a later round)."""
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.qps)
            self.updated = now
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
            return True

    def backoff_s(self, attempt: int, retry_after: str | None) -> float:
        try:
            asked = float(retry_after) if retry_after else 0.0
        except ValueError:
            asked = 0.0  # an HTTP date: fall back to our own schedule
        return min(self.max_backoff_s, max(asked, 0.5 * 2 ** attempt))

    def install(self, api: client.ApiClient) -> client.ApiClient:
        inner = api.rest_client.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            for attempt in range(self.retries + 1):
                self.take()
                try:
                    response = inner(method, url, *args, **kwargs)
                    if not _streams(url):
                        response.read()  # the body too: a connection cut mid-answer is retried here
                except TRANSPORT_ERRORS:
                    if attempt == self.retries:
                        raise
                    delay = self.backoff_s(attempt, None)
                else:
                    if response.status not in RETRY_STATUSES or attempt == self.retries:
                        return response
                    delay = self.backoff_s(attempt, response.headers.get("Retry-After"))
                    _discard(response)
                with self.lock:
                    self.retried += 1
                self.sleep(delay)
            raise AssertionError("unreachable")

        api.rest_client.request = request
        return api


def _streams(url: str) -> bool:
    """A watch or a followed log: its body is read as it arrives, by the caller (who reconnects)."""
    query = url.partition("?")[2].lower()
    return "watch=true" in query or "follow=true" in query


def _discard(response: Any) -> None:
    try:
        response.read()
    except Exception:  # noqa: BLE001 - a broken body of an answer we retry anyway
        pass


def connect(kubeconfig: str | None = None, context: str | None = None,
            throttle: Throttle | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig (file, $KUBECONFIG, ~/.kube/config) or, in a pod, in-cluster config;
    its requests go through `throttle` (default: 20 requests/s, bursts of 40, retries of 429/5xx)."""
    cfg = client.Configuration()
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ and kubeconfig is None and "KUBECONFIG" not in os.environ
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    try:
        if in_pod:
            config.load_incluster_config(client_configuration=cfg)
        else:
            if not os.path.exists(path):
                raise LauncherError(f"no kubeconfig at {path}; set KUBECONFIG, pass --kubeconfig, or run "
                                    "`gcloud container clusters get-credentials CLUSTER` (GKE)")
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    except LauncherError:
        raise
    except ConfigException as exc:
        raise LauncherError(_config_message(path, context, exc)) from None
    except Exception as exc:  # a kubeconfig that is not YAML, an exec plugin that is not installed
        raise LauncherError(f"cannot load kubeconfig {path}: {exc}; fix or regenerate the file") from None
    cfg.retries = URLLIB3_RETRIES
    return (throttle or Throttle()).install(client.ApiClient(cfg))


def _config_message(path: str, context: str | None, exc: ConfigException) -> str:
    text = str(exc)
    if context and "context" in text.lower():
        return f"kubeconfig {path} has no context {context!r}; list them with `kubectl config get-contexts`"
    if "No configuration found" in text or "Invalid kube-config" in text:
        return f"kubeconfig {path} is empty or invalid ({text}); regenerate it"
    return f"cannot use kubeconfig {path}: {text}"


def server_of(api: client.ApiClient) -> str:
    return api.configuration.host


def explain(exc: BaseException, api: client.ApiClient | None = None, namespace: str | None = None,
            action: str = "talk to the cluster") -> LauncherError:
    """A LauncherError whose message names the cause and the fix."""
    where = f" at {server_of(api)}" if api is not None else ""
    if isinstance(exc, LauncherError):
        return exc
    if isinstance(exc, ApiException):
        reason = _api_message(exc)
        if exc.status == 401:
            return LauncherError(f"the API server{where} rejected the credentials (401 Unauthorized): the token "
                                 "is invalid or has expired; refresh it (GKE: `gcloud container clusters "
                                 "get-credentials CLUSTER`) and retry")
        if exc.status == 403:
            return LauncherError(f"not allowed to {action} (403 Forbidden: {reason}); ask the cluster admin to "
                                 "apply the Role that `openrl-agent cluster rbac` prints"
                                 + (f" in namespace {namespace}" if namespace else ""))
        if exc.status == 404 and namespace and "namespaces" in reason and namespace in reason:
            return LauncherError(f"namespace {namespace!r} does not exist{where}; create it "
                                 f"(`kubectl create namespace {namespace}`) or pass another --namespace")
        return LauncherError(f"cannot {action}: the API server answered {exc.status} {exc.reason}: {reason}")
    if isinstance(exc, Urllib3Error | OSError):
        cause = getattr(exc, "reason", None) or exc
        return LauncherError(f"cannot reach the Kubernetes API server{where} ({cause}); check the cluster "
                             "is running and the kubeconfig's server address and network path")
    return LauncherError(f"cannot {action}: {exc}")


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message", "") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def call(fn: Any, *args: Any, api: client.ApiClient | None = None, namespace: str | None = None,
         action: str = "talk to the cluster", **kwargs: Any) -> Any:
    """fn(*args, **kwargs) with a request timeout; client failures become explained LauncherErrors."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
    try:
        return fn(*args, **kwargs)
    except (ApiException, Urllib3Error, OSError) as exc:
        raise explain(exc, api, namespace, action) from None


def create_or_adopt(create: Any, read: Any, body: dict[str, Any], match: tuple[str, ...],
                    api: client.ApiClient) -> tuple[Any, bool]:
    """(the object, whether this call created it). One that exists already (409) is adopted only if it
    carries body's values of the labels in `match`; else a LauncherError names it and the fix."""
    meta = body["metadata"]
    ns, name, kind = meta["namespace"], meta["name"], body["kind"]
    try:
        return create(ns, body, _request_timeout=REQUEST_TIMEOUT_S), True
    except ApiException as exc:
        if exc.status != 409:
            raise explain(exc, api, ns, f"create {kind}s") from None
    existing = call(read, name, ns, api=api, namespace=ns, action=f"get {kind}s")
    labels = existing.metadata.labels or {}
    if any(labels.get(k) != meta["labels"][k] for k in match):
        wanted = ", ".join(f"{k}={meta['labels'][k]}" for k in match)
        raise LauncherError(f"{kind} {ns}/{name} exists and is not ours: it lacks {wanted} (it has {labels}); "
                            "delete it or use another namespace")
    return existing, False
