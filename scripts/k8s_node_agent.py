"""A test-only stand-in for a kubelet (and the scheduler) on the loopback control plane.

Started by scripts/k8s-test-cluster.sh; never use it on a real cluster. It:
- registers a Node (InternalIP 127.0.0.1, its own port as the kubelet endpoint) and heartbeats it;
- binds pending pods whose nodeSelector and resources this node satisfies (others stay Pending
  with PodScheduled=False, as on a cluster without a matching node);
- runs each bound pod's single container as a local process group: `python` becomes this
  interpreter, ConfigMap and emptyDir volumes become directories under --state-dir, PVCs map to
  directories given by --pvc NAME=DIR, and every mountPath in the command, args, env and
  workingDir is rewritten to its local directory;
- reports phase, container state and exit code through the pod status API;
- behaves like a kubelet where a launcher must read the reason: an image under `registry.invalid/`
  (a reserved name no registry answers) waits in ErrImagePull/ImagePullBackOff, and a container
  with runAsNonRoot but no numeric runAsUser fails with CreateContainerConfigError (the image's
  user is taken to be the name `trial`, as in docker/Dockerfile.* before it was made numeric);
- serves `/containerLogs/<ns>/<pod>/<container>` over HTTPS, which is where the real API server
  proxies `kubectl logs` (pods/log) to, so logs flow through the API exactly as with a kubelet;
- on pod deletion kills the process group and removes the pod; on SIGTERM kills everything and
  deletes its Node;
- injects what a real node does to a pod over hours, when the pod carries these annotations
  (INJECT, set through the launcher's pod_annotations):
  `log-resets: N`      the first N log reads promise a body and drop the connection halfway;
  `log-delay-s: S`     every log read answers only after S s (a slow or overloaded kubelet);
  `evict-after-s: S`   S s after start, evicts the pod as a kubelet under pressure does (process
                       killed, phase Failed, reason Evicted, `evict-message` as the message);
  `delete-after-s: S`  S s after start, deletes the pod (a drain, a person) before its Job notices,
                       once per Job; the Job's replacement pod then starts REPLACEMENT_DELAY_S late,
                       as on a fresh node that pulls the image.
  `simulate-s: S`      runs no process: Running at once, a succeeded result line after S s, or, for
                       `hold:GROUP`, once STATE_DIR/release/GROUP exists (soak tests).
  A Job's deadline kill needs no injection: the controller manager deletes the pods itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from k8s_node_pods import PodProcess, SimulatedPod, container_problem, satisfies  # noqa: E402

INJECT = "openrl-test.invalid/"
REPLACEMENT_DELAY_S = 3.0


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        config.load_kube_config(config_file=args.kubeconfig)
        self.core = client.CoreV1Api()
        self.node = args.node_name
        self.port = args.port
        self.state_dir = Path(args.state_dir)
        self.pvcs = dict(item.split("=", 1) for item in args.pvc)
        self.cpus = args.cpus
        self.gpus = args.gpus
        self.pods: dict[str, PodProcess] = {}  # pod uid -> process
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deleted_jobs: set[str] = set()  # jobs whose pod `delete-after-s` deleted (once per Job)
        self.log_resets: dict[tuple[str, str], int] = {}  # (namespace, pod) -> resets left

    # ---- node -----------------------------------------------------------------------------
    def node_status(self) -> dict:
        capacity = {"cpu": str(self.cpus), "memory": "16Gi", "pods": "110"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node agent",
                 "lastHeartbeatTime": now(), "lastTransitionTime": now()}
        return {"capacity": capacity, "allocatable": capacity, "conditions": [ready],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.node}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                             "osImage": "openrl-agent test node", "containerRuntimeVersion": "local://0",
                             "kubeletVersion": "v0.0.0-test", "kubeProxyVersion": "", "operatingSystem": "linux",
                             "architecture": "amd64"}}

    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "openrl-agent/test-node": "true"}
        body = {"metadata": {"name": self.node, "labels": labels}}
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(self.node, {"status": self.node_status()})

    def heartbeat(self) -> None:
        while not self.stop.wait(10):
            try:
                self.core.patch_node_status(self.node, {"status": self.node_status()})
            except Exception as exc:  # the API server is going away at teardown
                print(f"node agent: heartbeat failed: {exc}", file=sys.stderr)

    # ---- scheduling -----------------------------------------------------------------------
    def schedule_loop(self) -> None:
        self._loop(self._schedule_event, field_selector="spec.nodeName=")

    def _schedule_event(self, kind: str, pod: client.V1Pod) -> None:
        if kind == "DELETED" or pod.spec.node_name or pod.metadata.deletion_timestamp:
            return
        node_labels = self.core.read_node(self.node).metadata.labels or {}
        why = satisfies(pod, node_labels, {"nvidia.com/gpu": self.gpus})
        if why:
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": f"0/1 nodes are available: {why}", "lastTransitionTime": now()}
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace,
                                                  {"status": {"conditions": [cond]}})
            return
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.metadata.name},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
        try:  # _preload_content=False: the client cannot parse the Binding it gets back
            self.core.create_namespaced_pod_binding(pod.metadata.name, pod.metadata.namespace, binding,
                                                    _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # ---- running --------------------------------------------------------------------------
    def pod_loop(self) -> None:
        self._loop(self._pod_event, field_selector=f"spec.nodeName={self.node}")

    def _pod_event(self, kind: str, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        if os.environ.get("OPENRL_NODE_DEBUG"):
            print(f"event {kind} {pod.metadata.name} {pod.status.phase} del={pod.metadata.deletion_timestamp}",
                  file=sys.stderr, flush=True)
        with self.lock:
            proc = self.pods.get(uid)
        if kind == "DELETED" or pod.metadata.deletion_timestamp:
            if proc is not None:
                proc.kill()
            with self.lock:
                self.pods.pop(uid, None)
            if kind != "DELETED":
                self._remove(pod)
            return
        if proc is None and pod.status.phase in (None, "Pending"):
            waiting = container_problem(pod)
            if waiting:
                self._patch_waiting(pod, *waiting)
                return
            simulate = _inject(pod, "simulate-s")
            if simulate is not None:
                proc = SimulatedPod(pod, self.state_dir, simulate, on_exit=self._report_exit)
            else:
                proc = PodProcess(pod, self.core, self.state_dir, self.pvcs, on_exit=self._report_exit)
            with self.lock:
                self.pods[uid] = proc
                resets = int(_inject(pod, "log-resets") or 0)
                if resets:
                    self.log_resets.setdefault((proc.namespace, proc.name), resets)
            threading.Thread(target=self._start, args=(proc,), daemon=True).start()

    def _start(self, proc: PodProcess) -> None:
        job = (proc.pod.metadata.labels or {}).get("job-name", "")
        with self.lock:
            replacement = job in self.deleted_jobs
        if replacement:
            time.sleep(REPLACEMENT_DELAY_S)
        try:
            proc.start()
        except Exception as exc:
            proc.log_line(f"node agent: cannot start container: {exc}")
            self._report_exit(proc, 128)
            return
        self._patch_status(proc, "Running", {"running": {"startedAt": proc.started_at}}, ready=True)
        evict_s, delete_s = _inject(proc.pod, "evict-after-s"), _inject(proc.pod, "delete-after-s")
        if evict_s is not None:
            threading.Timer(float(evict_s), self._evict, args=(proc,)).start()
        if delete_s is not None and not replacement:
            threading.Timer(float(delete_s), self._delete_pod, args=(proc, job)).start()

    # ---- injected disruptions --------------------------------------------------------------
    def _evict(self, proc: PodProcess) -> None:
        """What the kubelet's eviction manager leaves: phase Failed, reason Evicted, the container killed."""
        message = _inject(proc.pod, "evict-message") or "The node was low on resource: memory."
        proc.kill(grace_s=1.0)
        terminated = {"exitCode": 137, "reason": "Error", "startedAt": proc.started_at or now(), "finishedAt": now()}
        status = {"phase": "Failed", "reason": "Evicted", "message": message,
                  "containerStatuses": [{"name": proc.container_name, "image": proc.image, "imageID": "",
                                         "ready": False, "restartCount": 0, "started": False,
                                         "state": {"terminated": terminated}}]}
        try:
            self.core.patch_namespaced_pod_status(proc.name, proc.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _delete_pod(self, proc: PodProcess, job: str) -> None:
        with self.lock:
            self.deleted_jobs.add(job)
        try:
            self.core.delete_namespaced_pod(proc.name, proc.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def take_log_reset(self, namespace: str, pod: str) -> bool:
        with self.lock:
            left = self.log_resets.get((namespace, pod), 0)
            if left:
                self.log_resets[(namespace, pod)] = left - 1
            return left > 0

    def _report_exit(self, proc: PodProcess, code: int) -> None:
        sig = -code if code < 0 else None
        exit_code = 128 + sig if sig else code
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "startedAt": proc.started_at or now(), "finishedAt": now()}
        if sig:
            terminated["signal"] = sig
        self._patch_status(proc, "Succeeded" if exit_code == 0 else "Failed", {"terminated": terminated}, ready=False)

    def _patch_status(self, proc: PodProcess, phase: str, state: dict, ready: bool) -> None:
        flag = "True" if ready else "False"
        conds = [{"type": t, "status": s, "lastTransitionTime": now()} for t, s in
                 (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))]
        status = {"phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": proc.started_at or now(),
                  "conditions": conds,
                  "containerStatuses": [{"name": proc.container_name, "image": proc.image, "imageID": "",
                                         "ready": ready, "restartCount": 0, "started": phase == "Running",
                                         "state": state}]}
        try:
            self.core.patch_namespaced_pod_status(proc.name, proc.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report to
                raise

    def _patch_waiting(self, pod: client.V1Pod, reason: str, message: str) -> None:
        container = pod.spec.containers[0]
        status = {"phase": "Pending", "hostIP": "127.0.0.1",
                  "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "",
                                         "ready": False, "restartCount": 0, "started": False,
                                         "state": {"waiting": {"reason": reason, "message": message}}}]}
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _remove(self, pod: client.V1Pod) -> None:
        """Finish a graceful deletion the way a kubelet does: delete with grace 0 once stopped."""
        try:
            # Options go in the body: with a body, the API server ignores the query's gracePeriodSeconds.
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                            body={"gracePeriodSeconds": 0, "preconditions": {"uid": pod.metadata.uid}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _loop(self, handler, field_selector: str) -> None:
        while not self.stop.is_set():
            try:
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces, field_selector=field_selector,
                                              timeout_seconds=30)
                for event in stream:
                    handler(event["type"], event["object"])
                    if self.stop.is_set():
                        return
            except Exception as exc:
                if not self.stop.is_set():
                    print(f"node agent: watch ({field_selector}) restarting: {exc}", file=sys.stderr)
                    self.stop.wait(1)

    # ---- logs -----------------------------------------------------------------------------
    def log_delay_s(self, namespace: str, pod: str) -> float:
        with self.lock:
            procs = [p for p in self.pods.values() if p.namespace == namespace and p.name == pod]
        return float(_inject(procs[0].pod, "log-delay-s") or 0) if procs else 0.0

    def log_text(self, namespace: str, pod: str, query: dict[str, list[str]]) -> str | None:
        with self.lock:
            procs = [p for p in self.pods.values() if p.namespace == namespace and p.name == pod]
        path = procs[0].log_path if procs else self.state_dir / "pods" / namespace / pod / "container.log"
        if not path.exists():
            return None
        text = path.read_text(errors="replace")
        if "tailLines" in query:
            n = int(query["tailLines"][0])
            text = "".join(text.splitlines(keepends=True)[-n:]) if n > 0 else ""
        if "limitBytes" in query:
            text = text[: int(query["limitBytes"][0])]
        return text

    def serve_logs(self, cert: str, key: str) -> ThreadingHTTPServer:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if url.path == "/healthz":
                    return self._send(200, "ok")
                if len(parts) == 4 and parts[0] == "containerLogs":
                    time.sleep(agent.log_delay_s(parts[1], parts[2]))
                    text = agent.log_text(parts[1], parts[2], parse_qs(url.query))
                    if text is not None and agent.take_log_reset(parts[1], parts[2]):
                        return self._cut_off(text)
                    return self._send(404, "pod not found") if text is None else self._send(200, text)
                self._send(404, "not found")

            def _send(self, code: int, text: str) -> None:
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _cut_off(self, text: str) -> None:
                """Promise the whole log, send a third, drop the connection (a kubelet restarting)."""
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data) + 1))
                self.end_headers()
                self.wfile.write(data[: len(data) // 3])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    # ---- teardown -------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.stop.set()
        with self.lock:
            procs = list(self.pods.values())
        for proc in procs:
            proc.kill()
        try:
            self.core.delete_node(self.node, _request_timeout=5)
        except Exception:
            pass


def _inject(pod: client.V1Pod, key: str) -> str | None:
    return (pod.metadata.annotations or {}).get(INJECT + key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="openrl-test-node")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--pvc", action="append", default=[], help="NAME=DIR: a PersistentVolumeClaim's local dir")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--gpus", type=int, default=0)
    args = parser.parse_args()
    agent = NodeAgent(args)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    agent.serve_logs(args.tls_cert, args.tls_key)
    agent.register()
    for target in (agent.heartbeat, agent.schedule_loop, agent.pod_loop):
        threading.Thread(target=target, daemon=True).start()
    print(json.dumps({"node": agent.node, "port": agent.port, "ready": True}), flush=True)
    while not done.wait(1):
        pass
    agent.shutdown()
    time.sleep(0.2)


if __name__ == "__main__":
    main()
