"""cluster: where trials run. Never imports torch.

- `cluster.base`: the Launcher protocol, TrialHandle, statuses, `wait()`.
- `cluster.local.LocalLauncher`: process slots on this machine.
- `cluster.k8s_launcher.KubernetesLauncher` + `cluster.k8s_manifests.KubernetesConfig`: batch/v1 Jobs.
- `cluster.check.check_cluster`: what `openrl-agent cluster check` reports.
- `cluster.pod_entry`: the in-pod entry point of a trial Job.
Modules are imported explicitly so the local path never loads the kubernetes client.
"""
