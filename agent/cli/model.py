"""`openrl-agent model ...`: build the built-in policies and list the models this machine can use."""

from __future__ import annotations

import typer

from agent.cli.common import console, fail

app = typer.Typer(help="Build the built-in policies and list available models.", no_args_is_help=True)


@app.command("build")
def build(
    name: str = typer.Argument(..., help="Built-in model to build: tiny-gemma or micro-gemma."),
    eval_limit: int = typer.Option(400, "--eval-limit", help="Dev examples to evaluate (0 skips the check)."),
    pass_k: int = typer.Option(0, "--pass-k", help="Also report pass@k at --temperature (0 = greedy only)."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature for pass@k."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Generation length cap for the check."),
) -> None:
    """Build a built-in policy into the cache (once) and print its dev execution accuracy."""
    from rl_core import tiny_gemma  # lazy: torch loads only when a model command runs

    name = name.removeprefix("builtin:")
    if name not in tiny_gemma.RECIPES:
        fail(f"unknown built-in model {name!r}: choose one of {', '.join(sorted(tiny_gemma.RECIPES))}")
    cached = tiny_gemma.cached_path(name).is_dir()
    path = tiny_gemma.ensure_built(name, log=lambda msg: console.print(f"  {msg}", highlight=False))
    info = tiny_gemma.read_build_info(path)
    state = "cached" if cached else f"built in {info.get('build_seconds', 0):.0f} s"
    console.print(f"builtin:{name} ({state}): {path}", highlight=False)
    console.print(
        f"  {info.get('parameters', 0):,} parameters, vocabulary {info.get('vocab_size')}, "
        f"{info.get('prompt_tokens_mean')} tokens per prompt (mean)", highlight=False,
    )
    if eval_limit > 0:
        report = tiny_gemma.evaluate_dev(path, limit=eval_limit, pass_k=pass_k, temperature=temperature,
                                         max_new_tokens=max_new_tokens)
        console.print(f"  dev execution accuracy (greedy, n={report['n']}): "
                      f"{100 * report['greedy']:.1f}% ± {100 * report['greedy_stderr']:.1f}", highlight=False)
        if pass_k:
            console.print(f"  pass@{pass_k} at T={temperature}: {100 * report['pass_k']:.1f}% "
                          f"(mean sample accuracy {100 * report['sample_mean']:.1f}%)", highlight=False)


@app.command("import")
def import_model(
    gguf_file: str = typer.Argument(..., help="A .gguf file to convert into a cached Hugging Face directory."),
    name: str = typer.Option(None, "--name", help="Name to use it by in trial specs (default: the file name)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier import of that name."),
) -> None:
    """Convert a GGUF checkpoint once; trial specs can then use it by name."""
    from pathlib import Path

    from rl_core.gguf import ModelImportError, _name_from_path, import_gguf

    try:
        path = import_gguf(gguf_file, name or _name_from_path(Path(gguf_file)), overwrite=overwrite)
    except ModelImportError as exc:
        fail(str(exc))
    console.print(f"imported {gguf_file} -> {path}", highlight=False)


@app.command("list")
def list_models() -> None:
    """Built-in policies, packaged models and imports, with where each one stands."""
    from rl_core import gguf, tiny_gemma

    for name in sorted(tiny_gemma.RECIPES):
        path = tiny_gemma.cached_path(name)
        state = str(path) if path.is_dir() else "not built yet (built on first use)"
        console.print(f"builtin:{name:<14} {state}", highlight=False)
    known = dict(gguf.known_model_states())
    for name, state in known.items():
        console.print(f"{name:<22} {state}", highlight=False)
    for model in gguf.list_cached_models():
        if model.name not in known:
            console.print(f"{model.name:<22} {model.path}", highlight=False)
