"""Pod processes for the test node agent (scripts/k8s_node_agent.py): volumes, paths, the process.

A container becomes a local process group. There is no image: `python`/`python3` is the node
agent's own interpreter (the repo's venv), and container paths are rewritten to local
directories: every volume mount's mountPath occurring in the command, args, env values or
workingDir is replaced by the volume's directory under the agent's state dir.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException


def satisfies(pod: client.V1Pod, node_labels: dict[str, str], extended: dict[str, int]) -> str:
    """'' if this node can run the pod, else why not (nodeSelector or an extended resource like GPUs)."""
    for key, value in (pod.spec.node_selector or {}).items():
        if node_labels.get(key) != value:
            return f"node didn't match Pod's node affinity/selector ({key}={value})"
    for container in pod.spec.containers:
        res = container.resources
        wanted = {**((res and res.requests) or {}), **((res and res.limits) or {})}
        for name, have in extended.items():
            if int(wanted.get(name, 0)) > have:
                return f"Insufficient {name}"
    return ""


def container_problem(pod: client.V1Pod) -> tuple[str, str] | None:
    """(waiting reason, message) a kubelet would report instead of starting the container, or None."""
    container = pod.spec.containers[0]
    if container.image.startswith("registry.invalid/"):
        return ("ImagePullBackOff", f'Back-off pulling image "{container.image}"')
    psc, csc = pod.spec.security_context, container.security_context
    non_root = (csc and csc.run_as_non_root) or (psc and psc.run_as_non_root)
    uid = (csc and csc.run_as_user) if csc and csc.run_as_user is not None else (psc and psc.run_as_user)
    if non_root and uid is None:
        return ("CreateContainerConfigError", "container has runAsNonRoot and image has non-numeric user (trial), "
                                              "cannot verify user is non-root")
    if non_root and uid == 0:
        return ("CreateContainerConfigError", "container's runAsUser breaks non-root policy")
    return None


def rewrite(text: str, mounts: list[tuple[str, str]]) -> str:
    """Replace container mount paths (whole path components only) with local directories."""
    for mount, local in mounts:
        text = re.sub(rf"(?<![\w/.-]){re.escape(mount.rstrip('/'))}(?=/|$|[^\w.-])", local, text)
    return text


class PodProcess:
    def __init__(self, pod: client.V1Pod, core: client.CoreV1Api, state_dir: Path, pvcs: dict[str, str],
                 on_exit: Callable[[PodProcess, int], None]) -> None:
        self.pod = pod
        self.core = core
        self.name, self.namespace = pod.metadata.name, pod.metadata.namespace
        self.container = pod.spec.containers[0]
        self.container_name, self.image = self.container.name, self.container.image
        self.pod_dir = state_dir / "pods" / self.namespace / self.name
        self.log_path = self.pod_dir / "container.log"
        self.pvcs = pvcs
        self.on_exit = on_exit
        self.proc: subprocess.Popen | None = None
        self.started_at: str | None = None
        self.killed = False

    def log_line(self, text: str) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(text + "\n")

    def start(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        volumes = {v.name: self._volume_dir(v) for v in self.pod.spec.volumes or []}
        mounts = []
        for m in self.container.volume_mounts or []:
            local = volumes[m.name] / m.sub_path if m.sub_path else volumes[m.name]
            mounts.append((m.mount_path, str(local)))
        mounts.sort(key=lambda pair: len(pair[0]), reverse=True)
        argv = [rewrite(a, mounts) for a in [*(self.container.command or []), *(self.container.args or [])]]
        if not argv:
            raise RuntimeError("the test node runs only containers with an explicit command (no image entrypoint)")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = {**os.environ, "HOSTNAME": self.name}
        env.pop("KUBECONFIG", None)
        for var in self.container.env or []:
            env[var.name] = rewrite(self._env_value(var), mounts)
        cwd = rewrite(self.container.working_dir, mounts) if self.container.working_dir else None
        if cwd and not Path(cwd).is_dir():
            cwd = None  # an image WORKDIR that does not exist here: run from the agent's directory
        if self.killed:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True)
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        if not self.killed:
            self.on_exit(self, code)

    def kill(self, grace_s: float = 3.0) -> None:
        self.killed = True
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                return

    def _env_value(self, var: client.V1EnvVar) -> str:
        if var.value_from is None:
            return var.value or ""
        ref = var.value_from.field_ref
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "spec.nodeName": self.pod.spec.node_name or "", "status.podIP": "127.0.0.1"}
        if ref is not None and ref.field_path in fields:
            return fields[ref.field_path]
        raise RuntimeError(f"env {var.name}: only value and fieldRef are supported by the test node")

    def _volume_dir(self, volume: client.V1Volume) -> Path:
        target = self.pod_dir / "volumes" / volume.name
        if volume.config_map is not None:
            data = self._wait_for(lambda: self.core.read_namespaced_config_map(volume.config_map.name,
                                                                               self.namespace).data or {})
            self._write_items(target, data, volume.config_map.items)
        elif volume.secret is not None:
            raw = self._wait_for(lambda: self.core.read_namespaced_secret(volume.secret.secret_name,
                                                                          self.namespace).data or {})
            self._write_items(target, {k: base64.b64decode(v).decode() for k, v in raw.items()}, volume.secret.items)
        elif volume.empty_dir is not None:
            target.mkdir(parents=True, exist_ok=True)
        elif volume.persistent_volume_claim is not None:
            claim = volume.persistent_volume_claim.claim_name
            if claim not in self.pvcs:
                raise RuntimeError(f"PVC {claim} has no local directory; start the agent with --pvc {claim}=DIR")
            target = Path(self.pvcs[claim])
            target.mkdir(parents=True, exist_ok=True)
        elif volume.host_path is not None:
            target = Path(volume.host_path.path)
        else:
            raise RuntimeError(f"volume {volume.name}: unsupported type on the test node")
        return target

    @staticmethod
    def _write_items(target: Path, data: dict[str, str], items: list | None) -> None:
        target.mkdir(parents=True, exist_ok=True)
        paths = {i.key: i.path for i in items} if items else {k: k for k in data}
        for key, rel in paths.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_text(data[key])

    @staticmethod
    def _wait_for(read: Callable[[], dict], timeout_s: float = 30.0) -> dict:
        """A kubelet retries a missing ConfigMap until it appears; so do we, for a while."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return read()
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


class SimulatedPod:
    """A pod that runs no process (the `simulate-s` injection, for soak tests with many pods): Running at
    once, then after `seconds` it prints a succeeded result line, as cluster.pod_entry would, and exits 0."""

    def __init__(self, pod: client.V1Pod, state_dir: Path, seconds: str,
                 on_exit: Callable[[SimulatedPod, int], None]) -> None:
        self.pod = pod
        self.name, self.namespace = pod.metadata.name, pod.metadata.namespace
        self.container_name, self.image = pod.spec.containers[0].name, pod.spec.containers[0].image
        self.pod_dir = state_dir / "pods" / self.namespace / self.name
        self.log_path = self.pod_dir / "container.log"
        self.started_at: str | None = None
        # "S": finish after S s; "hold:GROUP": finish once STATE_DIR/release/GROUP exists (a soak releases
        # a whole group at once, to see many trials finish in one poll round).
        self.release = state_dir / "release" / seconds[5:] if seconds.startswith("hold:") else None
        self.stopped = threading.Event()
        self.timer = threading.Timer(0.0 if self.release else float(seconds), self._finish)
        self.timer.daemon = True
        self.on_exit = on_exit

    def start(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("simulated trial\n")
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.timer.start()

    def _finish(self) -> None:
        while self.release is not None and not self.release.exists():
            if self.stopped.wait(0.5):
                return
        trial = (self.pod.metadata.labels or {}).get("openrl-agent/trial", "trial")
        result = {"schema_version": 2, "trial_id": trial, "status": "succeeded", "error": None,
                  "metrics": {"dev_accuracy_after": 0.5}, "adapter_path": None, "lineage": {}, "spec": {}}
        with open(self.log_path, "a") as f:
            f.write("OPENRL_RESULT_JSON: " + json.dumps(result, separators=(",", ":")) + "\n")
        self.on_exit(self, 0)

    def kill(self, grace_s: float = 0.0) -> None:
        self.stopped.set()
        self.timer.cancel()

    def log_line(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text + "\n")
