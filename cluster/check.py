"""`openrl-agent cluster check`: can this kubeconfig run trials in that namespace, and on what?

Checks in order, stopping at the first one the rest depend on: the kubeconfig loads; the API server
answers and accepts the credentials; the namespace exists; RBAC allows every verb the launcher uses
(SelfSubjectAccessReview, one per verb in NEEDED); Kueue's LocalQueue exists (when one is configured);
the image reference suits the trials; and the nodes' GPU capacity. Whether the image can be pulled
is not checked: that needs the nodes' registry credentials, which this user does not hold.

`rbac_manifests` renders NEEDED as the minimal Role and RoleBinding (`openrl-agent cluster rbac`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from cluster.base import LauncherError
from cluster.k8s_client import REQUEST_TIMEOUT_S, connect, explain
from cluster.k8s_manifests import GKE_ACCELERATOR_LABEL, KubernetesConfig
from cluster.k8s_view import read_local_queue

# (API group, resource, verb) the KubernetesLauncher uses: submit, the Job and pod watches (each starts
# with a LIST), pending reasons (FailedCreate events), collection (pod logs), cancel, reattach (the spec
# ConfigMap).
NEEDED = [("batch", "jobs", "create"), ("batch", "jobs", "list"), ("batch", "jobs", "watch"),
          ("batch", "jobs", "delete"), ("", "configmaps", "create"), ("", "configmaps", "get"),
          ("", "configmaps", "patch"), ("", "configmaps", "delete"), ("", "pods", "list"), ("", "pods", "watch"),
          ("", "pods/log", "get"), ("", "events", "list")]
KUEUE_NEEDED = [("kueue.x-k8s.io", "localqueues", "get"), ("kueue.x-k8s.io", "workloads", "list")]
ROLE_NAME = "openrl-agent-launcher"


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
    items.append(_rbac(api, config.namespace, NEEDED + (KUEUE_NEEDED if config.kueue_queue else [])))
    if config.kueue_queue:
        items.append(_kueue(api, config))
    items.append(_image(config))
    items.append(_gpus(api, config))
    return items


def rbac_manifests(namespace: str, subject: dict[str, str], kueue: bool = False) -> list[dict[str, Any]]:
    """The least Role the launcher needs in `namespace`, and its binding to `subject` (kind, name)."""
    rules: dict[tuple[str, str], list[str]] = {}
    for group, resource, verb in NEEDED + (KUEUE_NEEDED if kueue else []):
        rules.setdefault((group, resource), []).append(verb)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": ROLE_NAME, "namespace": namespace},
            "rules": [{"apiGroups": [g], "resources": [r], "verbs": v} for (g, r), v in rules.items()]}
    who = dict(subject)
    if who["kind"] == "ServiceAccount":
        who.setdefault("namespace", namespace)
    else:
        who.setdefault("apiGroup", "rbac.authorization.k8s.io")
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": ROLE_NAME, "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
               "subjects": [who]}
    return [role, binding]


def _kueue(api: client.ApiClient, config: KubernetesConfig) -> CheckItem:
    try:
        lq = read_local_queue(api, config.namespace, config.kueue_queue)
    except LauncherError as exc:
        return CheckItem("kueue", False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a 403 or an unreachable server: say which
        return CheckItem("kueue", False, str(explain(exc, api, config.namespace, "get localqueues")))
    cluster_queue = (lq.get("spec") or {}).get("clusterQueue", "?")
    return CheckItem("kueue", True, f"LocalQueue {config.kueue_queue} -> ClusterQueue {cluster_queue} "
                                    f"({lq.get('apiVersion', '?')})")


def _image(config: KubernetesConfig) -> CheckItem:
    image = config.image
    tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else ""
    if config.gpus and tag.startswith("cpu"):
        return CheckItem("image", False, f"trials ask for GPUs but the image {image} is the CPU build; use the "
                                         "image built from docker/Dockerfile.cuda", fatal=False)
    if config.gpus == 0 and tag.startswith("cuda"):
        return CheckItem("image", False, f"{image} is the CUDA build but trials ask for no GPU (a larger pull "
                                         "for nothing); use the :cpu image or --gpus", fatal=False)
    pinned = "pinned by digest" if "@sha256:" in image else f"pull policy {config.pull_policy()} (a mutable tag)"
    return CheckItem("image", True, f"{image}, {pinned}; pullability is checked only when a pod starts")


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


def _rbac(api: client.ApiClient, namespace: str, needed: list[tuple[str, str, str]]) -> CheckItem:
    authz = client.AuthorizationV1Api(api)
    missing = []
    for group, resource, verb in needed:
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
                                        "admin to apply `openrl-agent cluster rbac` (a Role and RoleBinding)")
    return CheckItem("rbac", True, f"may create, watch and delete Jobs and ConfigMaps, read pod logs and events "
                                   f"({len(needed)} verbs checked)")


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


REACH_TIMEOUT_S = 10.0


def unreachable(config: KubernetesConfig) -> str | None:
    """Why a session could not use this cluster at all (a kubeconfig that cannot be loaded, a server
    that refuses or does not answer, credentials it rejects), in one line; None when it answers.
    Asked before a session exists, so that such a start leaves nothing behind."""
    try:
        api = connect(config.kubeconfig, config.context)
    except LauncherError as exc:
        return str(exc)
    try:
        client.VersionApi(api).get_code(_request_timeout=REACH_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every failure to answer becomes its one-line explanation
        return str(explain(exc, api))
    finally:
        api.close()
    return None
