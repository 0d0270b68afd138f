"""What the Kubernetes launcher costs the API server and the poll as sessions grow (marker k8s, loopback
control plane): pods come from a watch scoped to the session, not a LIST per poll; a slow kubelet holds up
only its own trial's log read; a trial dir on a runs volume that ignores fsGroup is the pod's to write.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
from kubernetes import client

from cluster.base import TERMINAL, wait
from cluster.k8s_launcher import MANAGED_SELECTOR, KubernetesLauncher
from cluster.k8s_view import SYNC_AFTER_S, ClusterView
from cluster.pod_entry import RESULT_MARKER, parse_result_line
from cluster.pod_entry import run as pod_entry_run
from tests.cluster.conftest import fake_spec
from tests.cluster.k8s_support import K8sCluster, k8s_config
from tests.cluster.test_conformance import wait_for

INJECT = "openrl-test.invalid/"


def record_requests(launcher: KubernetesLauncher) -> list[tuple[str, str]]:
    """(method, url) of every request the launcher's client sends from now on."""
    sent: list[tuple[str, str]] = []
    inner = launcher.api.rest_client.request

    def request(method: str, url: str, *args: object, **kwargs: object) -> object:
        sent.append((method, unquote(url)))
        return inner(method, url, *args, **kwargs)

    launcher.api.rest_client.request = request
    return sent


@pytest.mark.k8s
def test_pods_come_from_a_session_watch_not_a_list_per_poll(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("scope")
    other = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path / "other")
    elsewhere = other.submit(fake_spec("t1", session="s-other", sleep=60))  # another session's trial
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    sent = record_requests(launcher)
    handles = [launcher.submit(fake_spec(f"t{i}", sleep=i)) for i in range(3)]
    polls = 0
    deadline = time.monotonic() + 60
    while not all(launcher.status(h) in TERMINAL for h in handles) and time.monotonic() < deadline:
        launcher.poll()
        polls += 1
        time.sleep(0.2)
    assert {launcher.status(h) for h in handles} == {"succeeded"}
    pod_reads = [url for method, url in sent if method == "GET" and url.split("?")[0].endswith("/pods")]
    lists = [url for url in pod_reads if "watch=true" not in url]
    watches = [url for url in pod_reads if "watch=true" in url]
    assert polls > 10 and len(lists) <= 2, lists  # the watch's first LIST (and at most one catch-up LIST)
    assert watches and all("openrl-agent/session in (s-test)" in url for url in lists + watches)
    assert launcher.view.jobs.raw(elsewhere.ref.split("/")[1]) is None  # never sees another session
    other.cancel(elsewhere)
    other.close()
    launcher.close()


@pytest.mark.k8s
def test_a_finished_job_whose_pods_the_watch_has_not_shown_is_caught_up_by_one_list(k8s_cluster: K8sCluster,
                                                                                     tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("catchup")
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    handles = [launcher.submit(fake_spec(f"t{i}")) for i in range(2)]
    names = [h.ref.split("/")[1] for h in handles]
    batch = client.BatchV1Api(k8s_cluster.api())
    wait_for(lambda: all(batch.read_namespaced_job(n, ns).status.succeeded for n in names), what="Complete")
    launcher.close()
    view = ClusterView(k8s_cluster.api(), ns, MANAGED_SELECTOR)
    view.jobs.relist()  # the Jobs are known finished; the pod watch has shown nothing (a lagging watch)
    selectors = []
    real_list = view.core.list_namespaced_pod

    def listing(*args: object, **kwargs: object) -> object:
        selectors.append(kwargs.get("label_selector"))
        return real_list(*args, **kwargs)

    view.core.list_namespaced_pod = listing
    assert not any(view.pods_current(n) for n in names)
    view.refresh()
    assert selectors == []  # the watch gets SYNC_AFTER_S to catch up first
    time.sleep(SYNC_AFTER_S)
    view.refresh()
    assert len(selectors) == 1 and f"job-name in ({','.join(names)})" in selectors[0]  # one LIST for both
    assert all(view.pods_current(n) and view.pods_of(n)[-1].status.phase == "Succeeded" for n in names)
    view.refresh(force=True)
    assert len(selectors) == 1  # caught up: no more LISTs


@pytest.mark.k8s
def test_a_slow_kubelet_holds_up_only_its_own_trial(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("slowlog"), pod_annotations={INJECT + "log-delay-s": "8"})
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    slow = launcher.submit(fake_spec("slow"))
    config.pod_annotations = {}
    fast = launcher.submit(fake_spec("fast"))
    longest = 0.0
    deadline = time.monotonic() + 40
    while launcher.status(fast) not in TERMINAL and time.monotonic() < deadline:
        began = time.monotonic()
        launcher.poll()
        launcher.status(slow)
        longest = max(longest, time.monotonic() - began)
        time.sleep(0.1)
    assert launcher.status(fast) == "succeeded"
    assert longest < 2.0, f"a poll waited {longest:.1f}s on a slow log read"
    assert launcher.status(slow) == "running" and "reading the pod log" in (launcher.detail(slow) or "")
    assert wait(launcher, [slow], timeout_s=60)[slow] == "succeeded"  # read once the kubelet answers
    assert launcher.result(slow)["metrics"]["dev_accuracy_after"] == 0.5
    launcher.close()


@pytest.mark.k8s
def test_a_closed_launcher_still_streams_and_collects(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    """close() ends the watches and the log and delete threads; a later status starts them again."""
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("closed"), stream_interval_s=0.2)
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", sleep=4))
    deadline = time.monotonic() + 40
    while launcher.status(handle) != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    launcher.close()
    assert wait(launcher, [handle], timeout_s=40)[handle] == "succeeded"
    launcher.close()


@pytest.mark.k8s
def test_the_trial_dir_on_a_runs_volume_is_the_pods_to_write(k8s_cluster: K8sCluster) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("fsgroup"), runs_pvc="openrl-runs")
    launcher = KubernetesLauncher(config, runs_dir=k8s_cluster.pvc_dir)
    session = f"s-fsgroup-{uuid.uuid4().hex[:6]}"  # the volume outlives the test: a dir no earlier run made
    handle = launcher.submit(fake_spec("t1", session=session))
    made = (k8s_cluster.pvc_dir / session / "trials/t1").stat()
    if os.geteuid() == 0:
        assert (made.st_uid, made.st_gid) == (config.run_as_user, config.run_as_user)
    else:
        assert made.st_mode & 0o777 == 0o777
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    launcher.close()


def test_a_pod_that_cannot_write_its_trial_dir_says_why_and_the_fix(tmp_path: Path, capsys) -> None:
    (tmp_path / "spec.json").write_text('{"trial_id": "t1"}')
    (tmp_path / "runs").write_text("")  # not a directory: nobody, root included, can create the trial dir in it
    code = pod_entry_run(tmp_path / "spec.json", tmp_path / "runs" / "t1", ["true"])
    out = capsys.readouterr().out
    assert code == 1 and out.splitlines()[-1].startswith(RESULT_MARKER)
    error = parse_result_line(out)["error"]
    assert error["kind"] == "bad_spec" and "ignores fsGroup" in error["message"] and "chown" in error["message"]
