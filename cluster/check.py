"""`openrl-agent cluster check`: can this kubeconfig run trials in that namespace, and on what?

Checks in order, stopping at the first one the rest depend on: the kubeconfig loads; the API server
answers and accepts the credentials; the namespace exists; RBAC lets this user create and watch
Jobs and ConfigMaps and read pod logs (SelfSubjectAccessReview); and the nodes' GPU capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException

from cluster.base import LauncherError
from cluster.k8s_client import REQUEST_TIMEOUT_S, connect, explain
from cluster.k8s_manifests import GKE_ACCELERATOR_LABEL, KubernetesConfig

# (API group, resource, verb) the KubernetesLauncher uses.
NEEDED = [("batch", "jobs", "create"), ("batch", "jobs", "get"), ("batch", "jobs", "list"), ("batch", "jobs", "watch"),
          ("batch", "jobs", "delete"), ("", "configmaps", "create"), ("", "configmaps", "patch"),
          ("", "configmaps", "delete"), ("", "pods", "list"), ("", "pods/log", "get")]


@dataclass
class CheckItem:
    name: str
    ok: bool
    detail: str
    fatal: bool = True  # a failed non-fatal item is a warning: trials can still run


def check_cluster(config: KubernetesConfig) -> list[CheckItem]:
    try:
        api = connect(config.kubeconfig, config.context)
    except LauncherError as exc:
        return [CheckItem("kubeconfig", False, str(exc))]
    items = [CheckItem("kubeconfig", True, f"server {api.configuration.host}")]
    try:
        version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:
        return [*items, CheckItem("access", False, str(explain(exc, api)))]
    items.append(CheckItem("access", True, f"Kubernetes {version.git_version}, credentials accepted"))
    ns_item = _namespace(api, config.namespace)
    items.append(ns_item)
    if not ns_item.ok and ns_item.fatal:
        return items
    items.append(_rbac(api, config.namespace))
    items.append(_gpus(api, config))
    return items


def _namespace(api: client.ApiClient, namespace: str) -> CheckItem:
    try:
        client.CoreV1Api(api).read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            return CheckItem("namespace", False, f"namespace {namespace!r} does not exist; create it "
                                                 f"(`kubectl create namespace {namespace}`) or pass another --namespace")
        if exc.status == 403:
            return CheckItem("namespace", False, f"cannot read namespace {namespace!r} (403); assuming it exists",
                             fatal=False)
        return CheckItem("namespace", False, str(explain(exc, api, namespace)))
    return CheckItem("namespace", True, f"{namespace} exists")


def _rbac(api: client.ApiClient, namespace: str) -> CheckItem:
    authz = client.AuthorizationV1Api(api)
    missing = []
    for group, resource, verb in NEEDED:
        res, _, sub = resource.partition("/")
        attrs = {"namespace": namespace, "group": group, "resource": res, "verb": verb}
        if sub:
            attrs["subresource"] = sub
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attrs}}
        try:
            answer = authz.create_self_subject_access_review(review, _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:
            return CheckItem("rbac", False, str(explain(exc, api, namespace, "review access")))
        if not answer.status.allowed:
            missing.append(f"{verb} {resource}")
    if missing:
        return CheckItem("rbac", False, f"missing in namespace {namespace}: {', '.join(missing)}; ask the cluster "
                                        "admin for a Role (and RoleBinding) granting them")
    return CheckItem("rbac", True, "may create, watch and delete Jobs and ConfigMaps and read pod logs")


def _gpus(api: client.ApiClient, config: KubernetesConfig) -> CheckItem:
    try:
        nodes = client.CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT_S).items
    except ApiException as exc:
        return CheckItem("gpus", False, f"cannot list nodes ({exc.status} {exc.reason}); GPU capacity unknown",
                         fatal=config.gpus > 0 and exc.status != 403)
    by_type: dict[str, int] = {}
    for node in nodes:
        count = int((node.status.allocatable or {}).get("nvidia.com/gpu", 0))
        if count:
            kind = (node.metadata.labels or {}).get(GKE_ACCELERATOR_LABEL, "nvidia")
            by_type[kind] = by_type.get(kind, 0) + count
    total = sum(by_type.values())
    summary = ", ".join(f"{n} x {t}" for t, n in sorted(by_type.items())) or "none"
    if config.gpus and config.gpu_type and by_type.get(config.gpu_type, 0) < config.gpus:
        return CheckItem("gpus", False, f"trials ask for {config.gpus} x {config.gpu_type} but nodes offer {summary}; "
                                        "a GPU node pool may scale up on demand (then this is fine)", fatal=False)
    if config.gpus and total < config.gpus:
        return CheckItem("gpus", False, f"trials ask for {config.gpus} GPU(s) but {len(nodes)} node(s) offer "
                                        f"{summary}; add a GPU node pool or run with --gpus 0", fatal=False)
    return CheckItem("gpus", True, f"{len(nodes)} node(s); allocatable GPUs: {summary}")
