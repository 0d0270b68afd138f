"""`openrl-agent cluster ...`: run trials on local slots, check a Kubernetes cluster, print a trial's Job."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agent.cli.common import console, fail

app = typer.Typer(help="Run trials in parallel on local slots or Kubernetes; check cluster access.",
                  no_args_is_help=True)


def _load_spec(path: Path, session: str | None) -> dict[str, Any]:
    from rl_core.spec import SpecError, TrialSpec

    try:
        spec = TrialSpec.load(path).to_json()
    except SpecError as exc:
        fail(f"{path}: {exc}")
    if session:
        spec["session"] = session
    if not spec["session"]:
        spec["session"] = time.strftime("local-%Y%m%d-%H%M%S")
    return spec


@app.command()
def run(
    specs: list[Path] = typer.Argument(..., help="Trial spec JSON files (docs/contracts.md)."),
    slots: int = typer.Option(None, help="Trials at once (default: from the core count)."),
    threads: int = typer.Option(None, help="Torch/BLAS threads per trial (default: cores / slots)."),
    runs_dir: Path = typer.Option(Path("runs"), help="Trials go to RUNS_DIR/<session>/trials/<trial_id>/."),
    session: str = typer.Option(None, help="Session id for all specs (default: the specs' own, or a new one)."),
    wall_s: float = typer.Option(None, help="Kill a trial after this many seconds (default: 3x its budget + 5 min)."),
) -> None:
    """Run trial specs in parallel on local process slots and print their results."""
    from cluster.base import TERMINAL, LauncherError
    from cluster.local import LocalLauncher

    loaded = [_load_spec(p, session) for p in specs]
    ids = [s["trial_id"] for s in loaded]
    if len(set(ids)) != len(ids):
        fail(f"two specs share a trial_id ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))}); "
             "give each spec its own trial_id")
    try:
        launcher = LocalLauncher(runs_dir=runs_dir, slots=slots, threads_per_trial=threads, wall_s=wall_s)
        handles = [launcher.submit(spec) for spec in loaded]
    except LauncherError as exc:
        fail(str(exc))
    console.print(f"{len(handles)} trial(s) on {launcher.slots} slot(s) x {launcher.threads} thread(s); "
                  f"logs in {runs_dir}/<session>/trials/<id>/trial.log")
    seen: dict[str, str] = {}
    while True:
        launcher.poll()
        for h in handles:
            status = launcher.status(h)
            if seen.get(h.trial_id) != status:
                seen[h.trial_id] = status
                console.print(f"  {h.trial_id}: {status}")
        if all(s in TERMINAL for s in seen.values()):
            break
        time.sleep(0.5)
    _print_results([(h.trial_id, seen[h.trial_id], launcher.result(h)) for h in handles])
    if any(s != "succeeded" for s in seen.values()):
        raise typer.Exit(1)


def _print_results(rows: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    from rl_core.trialdir import SplitFigures, result_metrics

    table = Table("trial", "status", "split", "acc before", "acc after", "wall s", "error")
    for trial_id, status, result in rows:
        metrics = result_metrics(result)
        scored = metrics.eval or SplitFigures("-")  # the split the trial was scored on, named (not always dev)
        error = (result or {}).get("error") or {}
        table.add_row(trial_id, status, scored.split, _num(scored.accuracy_before, 3),
                      _num(scored.accuracy_after, 3), _num(metrics.wall_s, 1),
                      f"{error.get('kind')}: {error.get('message')}" if error else "")
    console.print(table)


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _k8s_config(kubeconfig: str | None, context: str | None, namespace: str, gpus: int, gpu_type: str | None,
                **extra: Any):
    from cluster.base import LauncherError
    from cluster.k8s_manifests import KubernetesConfig

    try:
        return KubernetesConfig(kubeconfig=kubeconfig, context=context, namespace=namespace, gpus=gpus,
                                gpu_type=gpu_type, **extra)
    except LauncherError as exc:
        fail(str(exc))


@app.command()
def check(
    kubeconfig: str = typer.Option(None, help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
    context: str = typer.Option(None, help="Kubeconfig context (default: the current one)."),
    namespace: str = typer.Option("default", help="Namespace trials run in."),
    gpus: int = typer.Option(0, help="GPUs per trial, to check capacity for."),
    gpu_type: str = typer.Option(None, help="GKE accelerator type, e.g. nvidia-l4."),
    kueue_queue: str = typer.Option(None, help="Kueue LocalQueue trials are submitted to (checked when given)."),
    image: str = typer.Option("openrl-agent-trial:cpu", help="Trial image the session will use."),
) -> None:
    """Report access, namespace, every RBAC verb the launcher uses, Kueue, the image and GPU capacity."""
    from cluster.check import check_cluster

    items = check_cluster(_k8s_config(kubeconfig, context, namespace, gpus, gpu_type, kueue_queue=kueue_queue,
                                      image=image))
    for item in items:
        mark = "[green]  ok[/]" if item.ok else ("[red]FAIL[/]" if item.fatal else "[yellow]warn[/]")
        console.print(f"{mark} {item.name:<10} {item.detail}", highlight=False, soft_wrap=True)
    if any(not i.ok and i.fatal for i in items):
        raise typer.Exit(1)


@app.command()
def manifest(
    spec: Path = typer.Argument(..., help="Trial spec JSON file."),
    namespace: str = typer.Option("default"),
    image: str = typer.Option("openrl-agent-trial:cpu", help="Trial image (docker/Dockerfile.cpu or .cuda)."),
    cpu: str = typer.Option("2"),
    memory: str = typer.Option("8Gi"),
    gpus: int = typer.Option(0),
    gpu_type: str = typer.Option(None, help="GKE accelerator type, e.g. nvidia-l4."),
    kueue_queue: str = typer.Option(None, help="Kueue LocalQueue name."),
    runs_pvc: str = typer.Option(None, help="ReadWriteMany PVC holding the runs directory."),
) -> None:
    """Print the ConfigMap and Job a trial would be submitted as (JSON, for kubectl apply -f -)."""
    from cluster.k8s_manifests import build_manifests

    config = _k8s_config(None, None, namespace, gpus, gpu_type, image=image, cpu=cpu, memory=memory,
                         kueue_queue=kueue_queue, runs_pvc=runs_pvc)
    configmap, job = build_manifests(_load_spec(spec, None), config)
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [configmap, job]}, indent=2))


@app.command()
def rbac(
    namespace: str = typer.Option("default", help="Namespace trials run in."),
    service_account: str = typer.Option(None, help="Bind to this ServiceAccount (an agent running in a pod)."),
    user: str = typer.Option(None, help="Bind to this user (e.g. a Google account on GKE)."),
    group: str = typer.Option(None, help="Bind to this group."),
    kueue: bool = typer.Option(False, help="Also allow reading Kueue LocalQueues and Workloads."),
) -> None:
    """Print the minimal Role and RoleBinding the launcher needs (YAML, for kubectl apply -f -)."""
    import yaml

    from cluster.check import rbac_manifests

    subjects = [(k, v) for k, v in (("ServiceAccount", service_account), ("User", user), ("Group", group)) if v]
    if len(subjects) != 1:
        fail("give exactly one of --service-account, --user or --group: who runs the agent")
    kind, name = subjects[0]
    print(yaml.safe_dump_all(rbac_manifests(namespace, {"kind": kind, "name": name}, kueue=kueue),
                             sort_keys=False), end="")
