"""Checks a plan must pass before a session exists: every user mistake caught before it costs compute.

`check_plan(plan, runs_dir)` raises PreflightError (one line: what is wrong and the fix) when
- the search space or a pinned value would make a trial the runner refuses (every range end and
  choice is built into a spec and validated by rl_core.spec, the spec's one owner);
- the model cannot load: an unknown built-in, a missing directory or one without config.json or
  weights, a GGUF file that is not there, a packaged model whose extra is not installed, a Hub id
  that is neither cached nor reachable;
- the dataset is not built or imported, or lacks the train or evaluation split;
- the reward names a component or a setting sql_env does not know;
- the runs directory is a file or cannot be written.
It returns warnings (for example parallel trials above the usable cores, capped) that the caller shows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rl_core.catalogue import KNOWN_MODELS, RECIPES
from sql_env.datasets.store import DatasetError, dataset_dir, splits_of
from sql_env.rewards import RewardSpec
from tools.search_space import SearchSpace, SearchSpaceError

BUILTIN_PREFIX = "builtin:"


class PreflightError(ValueError):
    """The plan cannot run as given; the message says what to change."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def check_plan(plan: Any, runs_dir: str | os.PathLike[str], *, force_parallel: bool = False) -> list[str]:
    """Raise PreflightError for the first problem; return warnings (and apply caps) otherwise."""
    c = plan.constraints
    check_runs_dir(Path(runs_dir))
    check_launcher(plan.launcher, model=c.model)
    check_model(c.model)
    check_dataset(c.dataset, train_split="train", eval_split="dev")
    space = SearchSpace.from_json(plan.search_space)
    base = {"trial_id": "preflight", "session": "preflight", "model": c.model, "dataset": c.dataset,
            "seed": c.seed}
    if c.eval_limit:
        base["eval.limit"] = c.eval_limit
    if c.trial_seconds:
        base["budget.max_seconds"] = c.trial_seconds
    try:
        space.check(base)
    except SearchSpaceError as exc:
        raise PreflightError(str(exc)) from None
    check_reward(space, base)
    split = space.fixed.get("eval.split", "dev")
    if split == "test":
        raise PreflightError('eval.split "test" is sealed: the session chooses on dev and confirms the winner '
                             'on test at the end; remove the [fixed] "eval.split"')
    if space.fixed.get("eval.report_split"):
        raise PreflightError('eval.report_split is for a single trial tuned by hand; in a session the test split is '
                             'read once, by the confirmation of the winner; remove the [fixed] "eval.report_split"')
    return _cap_parallel(plan, force_parallel)


def check_reward(space: SearchSpace, base: dict[str, Any]) -> None:
    """sql_env owns the reward components and their params: the default trial's reward must be one
    it accepts (a misspelt reward param fails here, not in every trial)."""
    reward = space.build_spec(space.defaults(), base=base).reward
    try:
        RewardSpec.from_json({"components": reward.components, "params": reward.params})
    except ValueError as exc:
        raise PreflightError(f"reward: {exc}") from None


def _cap_parallel(plan: Any, force: bool) -> list[str]:
    c = plan.constraints
    cores = usable_cores()
    if (plan.launcher or {}).get("name", "local") != "local" or c.parallel <= cores:
        return []
    if force:
        return [f"{c.parallel} trials at once on {cores} usable cores: each trial gets a fraction of a core "
                "and all of them slow down (kept because --force-parallel was given)"]
    asked = c.parallel
    c.parallel = cores
    return [f"{asked} trials at once on {cores} usable cores would slow every trial down; running {cores} at a "
            "time (add --force-parallel to keep the number you asked for)"]


def check_runs_dir(runs_dir: Path) -> None:
    """The runs directory exists or can be created, and a file can be written in it. Tried for real
    (root passes every permission check, and /proc or a read-only mount refuse a mkdir anyway); the
    directories the probe creates are removed again."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise PreflightError(f"--runs-dir {runs_dir} is a file, not a directory; pick a directory for sessions")
    missing = []
    probe = runs_dir
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        fd, name = tempfile.mkstemp(dir=runs_dir, prefix=".write-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PreflightError(f"--runs-dir {runs_dir} cannot be written ({exc.strerror or exc}); "
                             "pick a directory you can write to") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_launcher(launcher: dict[str, Any], model: str | None = None) -> None:
    """A Kubernetes launcher needs credentials and a server that answers them, a tinker launcher an
    endpoint that answers and serves the model, checked before a session exists (as the model and
    the dataset are). The kubernetes client is imported only here, for k8s plans: a local session
    does not pay for loading it."""
    settings = dict(launcher)
    name = settings.pop("name", "local")
    if name == "tinker":
        check_tinker_endpoint(settings.get("endpoint"), model)
        return
    if name != "k8s":
        return
    if not _has_kubeconfig():
        raise PreflightError("--launcher k8s needs cluster credentials: set KUBECONFIG or create ~/.kube/config "
                             "(see README, 'Running on Kubernetes'), or use --launcher local")
    from cluster.base import LauncherError
    from cluster.check import unreachable
    from cluster.k8s_manifests import KubernetesConfig

    try:
        config = KubernetesConfig(**settings)
    except TypeError as exc:
        raise PreflightError(f"launcher settings: {exc}; see the README's Kubernetes settings") from None
    except LauncherError as exc:
        raise PreflightError(str(exc)) from None
    problem = unreachable(config)
    if problem:
        raise PreflightError("--launcher k8s: " + " ".join(problem.split()))  # YAML errors span lines


TINKER_HEALTH = "/api/v1/healthz"  # answered without the API key (rl_core/serve/app.py, and Tinker's own)
TINKER_WAIT_S = 5.0


def check_tinker_endpoint(endpoint: str | None, model: str | None, wait_s: float = TINKER_WAIT_S) -> None:
    """The SDK is installed, the endpoint answers its key-free health check within `wait_s`, and, where
    it lists its models (get_server_capabilities, with $TINKER_API_KEY), it serves `model`. A listing
    the endpoint refuses without a key is left to the trials (their SDK may hold a stored key)."""
    if not endpoint:
        raise PreflightError("--launcher tinker needs the endpoint: endpoint = \"http://host:8000\" in the config's "
                             "[launcher] table, or export TINKER_BASE_URL (`openrl-agent serve` prints its URL)")
    if not endpoint.startswith(("http://", "https://")):
        raise PreflightError(f"--launcher tinker: the endpoint {endpoint!r} is not an http:// or https:// URL")
    if importlib.util.find_spec("tinker") is None:
        raise PreflightError("--launcher tinker needs the tinker SDK: pip install 'openrl-agent[tinker]'")
    base = endpoint.rstrip("/")
    status, _ = _get(base + TINKER_HEALTH, wait_s)
    if status != 200:
        why = f"answered HTTP {status}" if isinstance(status, int) else f"did not answer within {wait_s:g} s ({status})"
        raise PreflightError(f"--launcher tinker: the endpoint {base} {why} at {TINKER_HEALTH}; start it "
                             "(`openrl-agent serve --model ...`) or fix the endpoint")
    key = os.environ.get("TINKER_API_KEY")
    status, body = _get(base + "/api/v1/get_server_capabilities", wait_s, {"X-API-Key": key} if key else {})
    if status in (401, 403) and key:
        raise PreflightError(f"--launcher tinker: the endpoint {base} refuses $TINKER_API_KEY (HTTP {status}); "
                             "export the key it was started with")
    served = [m.get("model_name") for m in (body or {}).get("supported_models") or [] if isinstance(m, dict)]
    if status == 200 and served and model and model not in served:
        raise PreflightError(f"--launcher tinker: the endpoint {base} does not serve {model}; it serves "
                             f"{', '.join(map(str, served))}: pass one of them as --model or serve {model} there")


def _get(url: str, wait_s: float, headers: dict[str, str] | None = None) -> tuple[int | str, Any]:
    """(HTTP status, the JSON body or None), or (the reason, None) when nothing answered."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=wait_s) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc), None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def _has_kubeconfig() -> bool:
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    paths = paths or [str(Path.home() / ".kube" / "config")]
    return any(Path(p).is_file() for p in paths) or bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def check_model(model: str) -> None:
    if model.startswith(BUILTIN_PREFIX):
        if model.removeprefix(BUILTIN_PREFIX) not in RECIPES:
            choices = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in sorted(RECIPES))
            raise PreflightError(f"unknown built-in model {model}; choose one of {choices}, or a local model directory")
        return
    if model in KNOWN_MODELS:
        pkg = KNOWN_MODELS[model]
        if importlib.util.find_spec(pkg.module) is None or importlib.util.find_spec("gguf") is None:
            raise PreflightError(f"model {model} needs the {pkg.extra} extra: pip install 'openrl-agent[{pkg.extra}]' "
                                 "(or `make setup EXTRAS=gemma`)")
        return
    if model.lower().endswith(".gguf"):
        if not Path(model).expanduser().is_file():
            raise PreflightError(f"GGUF file {model} does not exist; check the path")
        return
    path = Path(model).expanduser()
    if path.exists() or model.startswith(("/", "./", "../", "~")) or model.count("/") > 1:
        _check_model_dir(path, model)
        return
    if "/" in model and not _hub_cached(model):
        raise PreflightError(f"model {model} is not a local directory and is not in the Hugging Face cache; this "
                             "tool does not download weights: fetch it where the Hub is reachable "
                             f"(`huggingface-cli download {model} --local-dir DIR`) and pass --model DIR")
    if "/" not in model:
        raise PreflightError(f"model {model!r} is neither builtin:tiny-gemma, a packaged model "
                             f"({', '.join(KNOWN_MODELS)}), a GGUF file, a local directory nor a Hub id")


def _check_model_dir(path: Path, model: str) -> None:
    if not path.is_dir():
        raise PreflightError(f"model directory {model} does not exist; give a local Hugging Face model directory "
                             "(config.json + weights; see `openrl-agent model --help`) or builtin:tiny-gemma")
    config = path / "config.json"
    try:
        json.loads(config.read_text())
    except FileNotFoundError:
        raise PreflightError(f"{model} is not a Hugging Face model directory (no config.json); pass a directory "
                             "written by save_pretrained") from None
    except (OSError, ValueError) as exc:
        raise PreflightError(f"{config} cannot be read as JSON ({exc}); re-save the model") from None
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise PreflightError(f"{model} has a config.json but no weights (*.safetensors or *.bin); "
                             "re-save the model with save_pretrained")


def check_dataset(dataset: str, *, train_split: str, eval_split: str) -> None:
    try:
        folder = dataset_dir(dataset)
    except DatasetError as exc:
        raise PreflightError(str(exc)) from None
    have = splits_of(folder)
    for split in (train_split, eval_split):
        if split not in have:
            raise PreflightError(f"dataset {dataset} has no {split!r} split (it has: {', '.join(have) or 'none'}); "
                                 "import it again with a train and a dev split")


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False
