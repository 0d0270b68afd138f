"""A Tinker-compatible training API over rl_core (`openrl-agent serve`; docs/tinker.md).

    wire.py        the SDK's protobuf/JSON bodies as this server reads and writes them; SDK range check
    losses.py      cross_entropy, importance_sampling, ppo, cispo, dro: per-token sums
    host.py        one loaded base model, a LoRA adapter + AdamW per training client
    sampler.py     token-id prompts -> tokens with per-token log-probs, stop tokens and strings
    checkpoints.py tinker:// paths on disk (adapter, optimizer state, metadata)
    scheduler.py   futures; one queue per model in seq_id order; one worker, queues served in turn
    service.py     sessions, models, samplers: what each operation does
    app.py         the Starlette routes
    local.py       load the models and run the server (in a thread for tests and benchmarks)
    client_trial.py a trial spec run as a client of any Tinker endpoint (cluster/tinker_launcher.py)
"""
