"""`openrl-agent serve` driven by the real tinker SDK (pinned in the `tinker` extra) over loopback HTTP,
on builtin:micro-gemma, offline. One server for the module; each test makes its own training clients."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
import torch

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

from rl_core.policy import load_policy  # noqa: E402
from rl_core.serve.local import running  # noqa: E402
from rl_core.serve.service import ServeSettings  # noqa: E402

MODEL = "builtin:micro-gemma"
KEY = "tml-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    old = os.environ.get("TINKER_TELEMETRY")
    os.environ["TINKER_TELEMETRY"] = "0"  # nothing leaves the machine
    settings = ServeSettings(models=[MODEL], state_dir=tmp_path_factory.mktemp("serve"), device="cpu")
    with running(settings) as url:
        yield url, settings
    if old is None:
        os.environ.pop("TINKER_TELEMETRY", None)
    else:
        os.environ["TINKER_TELEMETRY"] = old


@pytest.fixture(scope="module")
def service(server):
    client = tinker.ServiceClient(base_url=server[0], api_key=KEY)
    yield client
    client.close("success").result()


@pytest.fixture(scope="module")
def local():
    """The base model, loaded apart from the server: the reference for recomputations."""
    return load_policy(MODEL)


def new_client(service, seed=0, rank=4):
    return service.create_lora_training_client(base_model=MODEL, rank=rank, seed=seed).result()


def datum(tokens, **inputs):
    """A next-token datum: input tokens[:-1], targets tokens[1:]."""
    n = len(tokens) - 1
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:], **{k: v[:n] for k, v in inputs.items()}})


def sft_datum(tokenizer, text):
    ids = tokenizer.encode(text)
    return datum(ids, weights=[1.0] * len(ids))


def logprobs(tc, data):
    out = tc.forward(data, "cross_entropy").result()
    return [o["logprobs"].to_numpy() for o in out.loss_fn_outputs], out.metrics["loss:sum"]


def step(tc, data, lr=1e-2, loss="cross_entropy"):
    fb = tc.forward_backward(data, loss)
    op = tc.optim_step(types.AdamParams(learning_rate=lr))
    return fb.result().metrics["loss:sum"], op.result()


def test_bootstrap_and_tokenizer(server, service, local):
    caps = tinker.RestClient(base_url=server[0], api_key=KEY).get_server_capabilities().result()
    assert [m.model_name for m in caps.supported_models] == [MODEL]
    tc = new_client(service)
    info = tc.get_info()
    assert info.model_data.model_name == MODEL and info.lora_rank == 4
    text = "SELECT name FROM users WHERE id = 1"
    assert tc.get_tokenizer().encode(text) == local.tokenizer.encode(text)


def test_cross_entropy_logprobs_equal_a_local_recomputation(service, local):
    tc = new_client(service)  # LoRA B starts at 0: the served model is the base model here
    ids = local.tokenizer.encode("SELECT count(*) FROM orders WHERE total > 10")
    weights = np.linspace(0.2, 1.0, len(ids) - 1).tolist()
    [served], loss = logprobs(tc, [datum(ids, weights=weights)])
    with torch.no_grad():
        logits = local.model(torch.tensor([ids[:-1]])).logits[0].float()
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert loss == pytest.approx(-(np.array(weights) * expected).sum(), rel=1e-5)


@pytest.mark.parametrize("loss_fn,config", [
    ("cross_entropy", {}), ("importance_sampling", {}), ("ppo", {}),
    ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.05}), ("cispo", {}), ("dro", {"beta": 0.3}),
])
def test_each_loss_equals_its_documented_formula(service, local, loss_fn, config):
    tc = new_client(service, seed=3)
    ids = local.tokenizer.encode("SELECT id, name FROM customers ORDER BY name LIMIT 5")
    n = len(ids) - 1
    rng = np.random.default_rng(7)
    [p], _ = logprobs(tc, [datum(ids, weights=[1.0] * n)])
    q = (p + rng.normal(0, 0.3, n)).astype(np.float32)  # a sampler that was a little off-policy
    adv = rng.normal(0, 1, n).astype(np.float32)
    w = rng.uniform(0, 1, n).astype(np.float32)
    if loss_fn == "cross_entropy":
        d = datum(ids, weights=w.tolist())
    else:
        d = datum(ids, logprobs=q.tolist(), advantages=adv.tolist())
    out = tc.forward([d], loss_fn, loss_fn_config=config or None).result()
    ratio = np.exp(p - q)
    lo, hi = config.get("clip_low_threshold", 0.8), config.get("clip_high_threshold", 1.2)
    expected = {
        "cross_entropy": -w * p,
        "importance_sampling": -ratio * adv,
        "ppo": -np.minimum(ratio * adv, np.clip(ratio, lo, hi) * adv),
        "cispo": -np.clip(ratio, lo, hi) * p * adv,
        "dro": -(p * adv - 0.5 * config.get("beta", 0.05) * (p - q) ** 2),
    }[loss_fn]
    np.testing.assert_allclose(out.loss_fn_outputs[0]["elementwise_loss"].to_numpy(), expected, rtol=1e-4, atol=1e-5)
    assert out.metrics["loss:sum"] == pytest.approx(expected.sum(), rel=1e-4, abs=1e-4)


def test_a_few_supervised_steps_lower_the_loss(service, local):
    tc = new_client(service)
    data = [sft_datum(local.tokenizer, t) for t in ("SELECT name FROM users", "SELECT total FROM orders")]
    losses = [step(tc, data, lr=2e-2)[0] for _ in range(4)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_sample_logprobs_equal_a_recomputed_forward(service, local):
    tc = new_client(service, seed=1)
    step(tc, [sft_datum(local.tokenizer, "SELECT name FROM users WHERE id = 3")])
    sampler = tc.save_weights_and_get_sampling_client().result()
    prompt = local.tokenizer.encode("SELECT")
    res = sampler.sample(types.ModelInput.from_ints(prompt), 2, types.SamplingParams(max_tokens=8, seed=5)).result()
    for seq in res.sequences:
        full = prompt + seq.tokens
        [lp], _ = logprobs(tc, [datum(full, weights=[1.0] * len(full))])
        np.testing.assert_allclose(seq.logprobs, lp[len(prompt) - 1:], atol=1e-4)
    assert len({tuple(s.tokens) for s in res.sequences}) == 2, "two samples at T=1 came out identical"


def test_a_sampler_snapshot_does_not_change_after_a_later_optim_step(service, local):
    tc = new_client(service, seed=2)
    sampler = tc.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(local.tokenizer.encode("SELECT name"))
    params = types.SamplingParams(max_tokens=6, seed=11, temperature=1.0)
    before = sampler.sample(prompt, 1, params).result().sequences[0]
    step(tc, [sft_datum(local.tokenizer, "SELECT name FROM products")], lr=5e-2)
    after = sampler.sample(prompt, 1, params).result().sequences[0]
    assert after.tokens == before.tokens and after.logprobs == before.logprobs
    fresh = tc.save_weights_and_get_sampling_client().result().sample(prompt, 1, params).result().sequences[0]
    assert not np.allclose(fresh.logprobs[:1], before.logprobs[:1]), "the optim_step changed nothing"


def test_chunked_forward_backward_equals_one_call(server, local):
    settings = server[1]
    data = [sft_datum(local.tokenizer, f"SELECT a{i} FROM t{i} WHERE x = {i}") for i in range(5)]
    results = []
    for chunk_len in (1024, 2):
        settings.fwdbwd_max_chunk_len = chunk_len  # sent to each new SDK session in its client config
        client = tinker.ServiceClient(base_url=server[0], api_key=KEY)
        try:
            tc = new_client(client, seed=4)
            assert tc.holder.get_client_config().fwdbwd_max_chunk_len == chunk_len
            loss, _ = step(tc, data)
            results.append((loss, logprobs(tc, data)[0]))
        finally:
            client.close("success").result()
            settings.fwdbwd_max_chunk_len = 1024
    (loss_one, lp_one), (loss_chunked, lp_chunked) = results
    assert loss_chunked == pytest.approx(loss_one, rel=1e-5)
    for a, b in zip(lp_one, lp_chunked, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_save_weights_then_a_client_from_that_state_gives_the_same_next_loss(service, local):
    data = [sft_datum(local.tokenizer, "SELECT city FROM stores GROUP BY city")]
    tc = new_client(service, seed=6)
    for _ in range(2):
        step(tc, data)
    path = tc.save_state("resume-me").result().path
    info = tinker.RestClient(base_url=service._base_url, api_key=KEY).get_weights_info_by_tinker_path(path).result()
    assert info.base_model == MODEL and info.lora_rank == 4
    resumed = service.create_training_client_from_state_with_optimizer(path).result()
    weights_only = service.create_training_client_from_state(path).result()
    assert logprobs(resumed, data)[1] == pytest.approx(logprobs(tc, data)[1], rel=1e-6)
    for client in (tc, resumed, weights_only):
        step(client, data)
    assert logprobs(resumed, data)[1] == pytest.approx(logprobs(tc, data)[1], rel=1e-5)
    # without the Adam moments the same step goes elsewhere: the optimizer state really came back
    assert logprobs(weights_only, data)[1] != pytest.approx(logprobs(tc, data)[1], rel=1e-3)


def test_two_clients_on_one_base_train_independently(service, local):
    x = [sft_datum(local.tokenizer, "SELECT name FROM users WHERE age > 30")]
    y = [sft_datum(local.tokenizer, "SELECT sum(total) FROM orders")]
    a, b = new_client(service, seed=8), new_client(service, seed=9)
    for _ in range(3):  # interleaved: both clients' requests are in flight at once
        futures = [a.forward_backward(x, "cross_entropy"), b.forward_backward(y, "cross_entropy"),
                   a.optim_step(types.AdamParams(learning_rate=1e-2)), b.optim_step(types.AdamParams(learning_rate=3e-2))]
        for f in futures:
            f.result()
    alone = new_client(service, seed=8)
    for _ in range(3):
        step(alone, x)
    np.testing.assert_allclose(logprobs(a, x)[0][0], logprobs(alone, x)[0][0], atol=1e-6)
    assert not np.allclose(logprobs(a, x)[0][0], logprobs(b, x)[0][0], atol=1e-3)


def test_unsupported_requests_are_clear_errors(server, service, local):
    tc = new_client(service)
    d = sft_datum(local.tokenizer, "SELECT 1")
    with pytest.raises(tinker.RequestFailedError, match="loss_fn 'gspo' is not supported.*cross_entropy"):
        tc.forward_backward([d], "gspo").result()
    with pytest.raises(Exception, match="not served here.*builtin:micro-gemma"):
        new_client_for = service.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=4)
        new_client_for.result()
    old_sdk = httpx.post(f"{server[0]}/api/v1/client/config", json={"sdk_version": "0.20.0"})
    assert old_sdk.status_code == 400 and ">=0.38.0,<0.39.0" in old_sdk.json()["detail"]
    missing = httpx.post(f"{server[0]}/api/v1/copy_weights", json={})
    assert missing.status_code == 404 and "not implemented" in missing.json()["detail"]
    unknown = httpx.post(f"{server[0]}/api/v1/weights_info", json={"tinker_path": "tinker://s-x:train:0/weights/none"})
    assert unknown.status_code == 404 and "no checkpoint" in unknown.json()["detail"]


def test_a_custom_loss_runs_client_side_through_forward_and_weighted_cross_entropy(service, local):
    data = [sft_datum(local.tokenizer, "SELECT name FROM users ORDER BY name")]

    def neg_ll(batch, logprobs_list):
        loss = sum(-(lp * torch.tensor(d.loss_fn_inputs["weights"].tolist())).sum()
                   for d, lp in zip(batch, logprobs_list, strict=True))
        return loss, {}

    custom, builtin = new_client(service, seed=12), new_client(service, seed=12)
    custom.forward_backward_custom(data, neg_ll).result()
    custom.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    step(builtin, data)
    np.testing.assert_allclose(logprobs(custom, data)[0][0], logprobs(builtin, data)[0][0], atol=1e-6)


def test_a_model_keeps_only_its_newest_snapshot_samplers(server, service, local):
    settings = server[1]
    settings.samplers_per_model = 2
    try:
        tc = new_client(service)
        samplers = [tc.save_weights_and_get_sampling_client().result() for _ in range(3)]
        prompt, params = types.ModelInput.from_ints(local.tokenizer.encode("SELECT")), types.SamplingParams(max_tokens=2)
        assert len(samplers[2].sample(prompt, 1, params).result().sequences) == 1
        with pytest.raises(Exception, match="newest snapshot samplers"):
            samplers[0].sample(prompt, 1, params).result(timeout=60)
    finally:
        settings.samplers_per_model = 8


def test_sampling_stops_at_a_stop_token_or_a_stop_string(service, local):
    sampler = new_client(service).save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(local.tokenizer.encode("SELECT name FROM"))
    free = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=10, temperature=0.0, stop=[])).result().sequences[0]
    assert free.stop_reason == "length" and len(free.tokens) == 10
    k = 4  # greedy is deterministic: stopping on what greedy emits at position k ends the sample there
    first = free.tokens.index(free.tokens[k])
    by_id = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=10, temperature=0.0, stop=[free.tokens[k]]))
    seq = by_id.result().sequences[0]
    assert seq.stop_reason == "stop" and list(seq.tokens) == list(free.tokens[:first + 1])
    text = local.tokenizer.decode(free.tokens[:k + 1])
    by_text = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=10, temperature=0.0, stop=[text[-3:]]))
    seq = by_text.result().sequences[0]
    assert seq.stop_reason == "stop" and len(seq.tokens) <= k + 1
    assert text[-3:] in local.tokenizer.decode(seq.tokens)


def test_samplers_on_the_base_model_and_on_saved_sampler_weights(service, local):
    prompt = types.ModelInput.from_ints(local.tokenizer.encode("SELECT id"))
    params = types.SamplingParams(max_tokens=5, seed=3)
    tc = new_client(service, seed=13)
    untrained = tc.save_weights_and_get_sampling_client().result().sample(prompt, 1, params).result().sequences[0]
    base = service.create_sampling_client(base_model=MODEL).result().sample(prompt, 1, params).result().sequences[0]
    assert base.tokens == untrained.tokens  # LoRA B starts at 0: the same model, the same seeded draw
    np.testing.assert_allclose(base.logprobs, untrained.logprobs, atol=1e-5)
    step(tc, [sft_datum(local.tokenizer, "SELECT id FROM accounts")], lr=5e-2)
    path = tc.save_weights_for_sampler("after-one-step").result().path
    assert path.endswith("/sampler_weights/after-one-step")
    saved = service.create_sampling_client(model_path=path).result().sample(prompt, 1, params).result().sequences[0]
    live = tc.save_weights_and_get_sampling_client().result().sample(prompt, 1, params).result().sequences[0]
    np.testing.assert_allclose(saved.logprobs, live.logprobs, atol=1e-6)
    assert not np.allclose(saved.logprobs[:1], base.logprobs[:1], atol=1e-4)
