"""Connecting to a cluster, and turning client failures into one sentence that says the fix.

The kubernetes client raises a zoo of errors (ConfigException, MaxRetryError, ApiException with a
JSON body, exec-plugin failures); `explain` maps the ones a user can cause to a LauncherError.
"""

from __future__ import annotations

import json
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError as Urllib3Error

from cluster.base import LauncherError

REQUEST_TIMEOUT_S = 15


def connect(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig (file, $KUBECONFIG, ~/.kube/config) or, in a pod, in-cluster config."""
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
    cfg.retries = 1  # fail in seconds when the server is down, not after urllib3's default retries
    return client.ApiClient(cfg)


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
            return LauncherError(f"not allowed to {action} (403 Forbidden: {reason}); ask the cluster admin "
                                 "for a Role granting create/get/list/watch/delete on jobs and configmaps"
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
