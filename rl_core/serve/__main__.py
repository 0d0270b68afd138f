"""`python -m rl_core.serve --model builtin:tiny-gemma --port 8000`: the server in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rl_core.cache import cache_dir
from rl_core.policy import PolicyLoadError
from rl_core.serve.local import serve_forever
from rl_core.serve.service import ServeSettings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rl_core.serve", description=__doc__)
    p.add_argument("--model", action="append", required=True, help="base model to serve (repeat for several)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto")
    p.add_argument("--state-dir", type=Path, default=cache_dir() / "serve", help="where saved weights live")
    p.add_argument("--api-key", default=os.environ.get("OPENRL_SERVE_API_KEY"),
                   help="require this X-API-Key (default: accept any; $OPENRL_SERVE_API_KEY)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is fastest for small models on a busy machine)")
    p.add_argument("--samplers-per-model", type=int, default=8,
                   help="snapshot samplers a training model keeps (the newest; each holds a copy of the adapter)")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)
    settings = ServeSettings(models=a.model, state_dir=a.state_dir, device=a.device, api_key=a.api_key,
                             samplers_per_model=a.samplers_per_model)
    try:
        serve_forever(settings, a.host, a.port, a.log_level)
    except PolicyLoadError as exc:  # a bad model name is one readable line, not a traceback
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
