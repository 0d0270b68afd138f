"""What the server holds (sessions, training models, samplers, loaded base models) and what each
Tinker operation does to it. Routes (`app.py`) parse bodies and call these; an operation the SDK
turns into a future is submitted to the scheduler and runs on its worker thread.

Identifiers follow the SDK's own derivations: a training model is `<session>:train:<model_seq_id>`
(the SDK computes this id itself when it creates a client from saved state), a sampler
`<session>:sample:<sampling_session_seq_id>`.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinker import types

from rl_core.serve.checkpoints import Checkpoint, CheckpointStore, TinkerPath
from rl_core.serve.host import Adapter, BaseHost, LoraSpec, Snapshot
from rl_core.serve.sampler import SampleParams
from rl_core.serve.scheduler import Scheduler
from rl_core.serve.wire import (
    FwdBwdRequest,
    NotFound,
    UserError,
    check_sdk_version,
    encode_forward_backward,
    encode_sample,
)

DEFAULT_MAX_TOKENS = 256


@dataclass
class ServeSettings:
    models: list[str]
    state_dir: Path
    device: str = "auto"
    api_key: str | None = None  # None: any key is accepted (a server on a trusted machine)
    fwdbwd_max_chunk_len: int = 1024  # datums per forward_backward request the SDK sends
    # Snapshot samplers a training model keeps (the newest): each holds a copy of the adapter, and a
    # GRPO loop makes one per step, so an unbounded count would grow memory by an adapter per step.
    samplers_per_model: int = 8
    lora_alpha: int = 32


@dataclass
class TrainedModel:
    model_id: str
    session_id: str
    host: BaseHost
    adapter: Adapter


@dataclass
class Sampler:
    sampler_id: str
    host: BaseHost
    spec: LoraSpec | None  # None: the base model itself
    tensors: Snapshot | None
    model_path: str | None = None


@dataclass
class Session:
    session_id: str
    sdk_version: str
    models: list[str] = field(default_factory=list)
    samplers: list[str] = field(default_factory=list)


class TinkerService:
    def __init__(self, settings: ServeSettings, hosts: dict[str, BaseHost], scheduler: Scheduler) -> None:
        self.settings, self.hosts, self.scheduler = settings, hosts, scheduler
        self.store = CheckpointStore(settings.state_dir)
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, TrainedModel] = {}
        self.samplers: dict[str, Sampler] = {}
        self._snapshots: dict[str, deque[str]] = {}  # training model -> its snapshot samplers, oldest first

    # ---- session ---------------------------------------------------------------------------
    def client_config(self, req: types.ClientConfigRequest) -> types.ClientConfigResponse:
        check_sdk_version(req.sdk_version)
        return types.ClientConfigResponse(use_pyqwest_transport=False, proto_compress_fwdbwd=False,
                                           fwdbwd_max_chunk_len=self.settings.fwdbwd_max_chunk_len)

    def create_session(self, req: types.CreateSessionRequest) -> types.CreateSessionResponse:
        check_sdk_version(req.sdk_version)
        session_id = f"s-{uuid.uuid4().hex[:12]}"
        self.sessions[session_id] = Session(session_id, req.sdk_version)
        return types.CreateSessionResponse(session_id=session_id)

    def finish_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        gone = [self.models.pop(m) for m in session.models if m in self.models]
        for s in session.samplers:
            self.samplers.pop(s, None)
        for model in gone:  # on the worker, after the requests the model had already queued
            self.scheduler.submit(model.model_id, lambda m=model: m.host.remove_adapter(m.adapter))

    def capabilities(self) -> types.GetServerCapabilitiesResponse:
        return types.GetServerCapabilitiesResponse(supported_models=[
            {"model_name": name, "trainable": True, "sampleable": True,
             "max_context_length": getattr(h.model.config, "max_position_embeddings", None)}
            for name, h in self.hosts.items()])

    def _session(self, session_id: str) -> Session:
        if session_id not in self.sessions:
            raise NotFound(f"unknown session {session_id!r}: create one first (the server may have restarted)")
        return self.sessions[session_id]

    def _host(self, base_model: str) -> BaseHost:
        if base_model not in self.hosts:
            raise UserError(f"base model {base_model!r} is not served here: this server serves "
                            f"{', '.join(self.hosts)} (start it with --model {base_model} to add it)")
        return self.hosts[base_model]

    def model(self, model_id: str) -> TrainedModel:
        if model_id not in self.models:
            raise NotFound(f"unknown model_id {model_id!r}")
        return self.models[model_id]

    # ---- training models -------------------------------------------------------------------
    def create_model(self, req: types.CreateModelRequest) -> str:
        session = self._session(req.session_id)
        if req.lora_config is None:
            raise UserError("create_model needs a lora_config: this server trains LoRA adapters only")
        _check_optimizer(req.optimizer_config)
        host = self._host(req.base_model)
        lc = req.lora_config
        spec = LoraSpec(lc.rank, lc.seed, lc.train_mlp, lc.train_attn, lc.train_unembed)
        model_id = f"{req.session_id}:train:{req.model_seq_id}"

        def run() -> types.CreateModelResponse:
            self._register(session, model_id, host, host.add_adapter(spec))
            return types.CreateModelResponse(model_id=model_id)
        return self.scheduler.submit("server", run)

    def _register(self, session: Session, model_id: str, host: BaseHost, adapter: Adapter) -> None:
        self.scheduler.start_sequence(model_id)
        self.models[model_id] = TrainedModel(model_id, session.session_id, host, adapter)
        session.models.append(model_id)

    def get_info(self, model_id: str) -> types.GetInfoResponse:
        m = self.model(model_id)
        return types.GetInfoResponse(
            model_id=model_id, is_lora=True, lora_rank=m.adapter.spec.rank, model_name=m.host.name,
            model_data=types.ModelData(arch=getattr(m.host.model.config, "model_type", None),
                                       model_name=m.host.name, tokenizer_id=m.host.tokenizer_id))

    def forward_backward(self, req: FwdBwdRequest) -> str:
        m = self.model(req.model_id)

        def run() -> bytes:
            outputs, metrics = m.host.forward_backward(m.adapter, req)
            return encode_forward_backward(outputs, metrics)
        return self.scheduler.submit(m.model_id, run, seq_id=req.seq_id)

    def optim_step(self, req: types.OptimStepRequest) -> str:
        m = self.model(req.model_id)
        p = req.optim_params

        def run() -> types.OptimStepResponse:
            if not isinstance(p, types.AdamParams):
                raise UserError(f"optimizer {getattr(p, 'type', type(p).__name__)!r} is not served: use AdamParams")
            return types.OptimStepResponse(metrics=m.host.optim_step(
                m.adapter, p.learning_rate, p.beta1, p.beta2, p.eps, p.weight_decay, p.grad_clip_norm))
        return self.scheduler.submit(m.model_id, run, seq_id=req.seq_id)

    # ---- weights ---------------------------------------------------------------------------
    def save_weights(self, req: types.SaveWeightsRequest) -> str:
        m = self.model(req.model_id)
        path = TinkerPath.parse(f"tinker://{m.model_id}/weights/{req.path or 'final'}")

        def run() -> types.SaveWeightsResponse:
            opt = m.adapter.optimizer.state_dict() if m.adapter.optimizer is not None else None
            self.store.save(path, Checkpoint(m.host.name, m.adapter.spec, m.host.snapshot(m.adapter), opt),
                            overwrite=req.overwrite)
            return types.SaveWeightsResponse(path=str(path))
        return self.scheduler.submit(m.model_id, run, seq_id=req.seq_id)

    def save_weights_for_sampler(self, req: types.SaveWeightsForSamplerRequest) -> str:
        m = self.model(req.model_id)
        if req.kind != "snapshot":
            raise UserError(f"sampling client kind {req.kind!r} is not served: use 'snapshot'")
        session = self._session(m.session_id)

        def run() -> types.SaveWeightsForSamplerResponseInternal:
            tensors = m.host.snapshot(m.adapter)  # taken here, in the model's request order
            if req.path is not None:
                path = TinkerPath.parse(f"tinker://{m.model_id}/sampler_weights/{req.path}")
                self.store.save(path, Checkpoint(m.host.name, m.adapter.spec, tensors, None))
                return types.SaveWeightsForSamplerResponseInternal(path=str(path))
            if req.sampling_session_seq_id is None:
                raise UserError("save_weights_for_sampler needs a path or a sampling_session_seq_id")
            sampler_id = f"{session.session_id}:sample:{req.sampling_session_seq_id}"
            self._add_sampler(session, Sampler(sampler_id, m.host, m.adapter.spec, tensors))
            kept = self._snapshots.setdefault(m.model_id, deque())
            kept.append(sampler_id)
            while len(kept) > self.settings.samplers_per_model:
                self.samplers.pop(kept.popleft(), None)
            return types.SaveWeightsForSamplerResponseInternal(sampling_session_id=sampler_id)
        return self.scheduler.submit(m.model_id, run, seq_id=req.seq_id)

    def load_weights(self, req: types.LoadWeightsRequest) -> str:
        path = TinkerPath.parse(req.path)
        if req.model_id is not None:  # onto an existing model, in its request order
            m = self.model(req.model_id)

            def onto() -> types.LoadWeightsResponse:
                ckpt = self.store.load(path, optimizer=req.optimizer)
                if ckpt.spec.shape_key() != m.adapter.spec.shape_key() or ckpt.base_model != m.host.name:
                    raise UserError(f"{path} was saved from {ckpt.base_model} with LoRA {ckpt.spec.to_dict()}, "
                                    f"which does not fit this model ({m.host.name}, {m.adapter.spec.to_dict()})")
                self._restore(m.adapter, m.host, ckpt)
                return types.LoadWeightsResponse(path=str(path), model_id=m.model_id)
            return self.scheduler.submit(m.model_id, onto, seq_id=req.seq_id)
        if req.session_id is None or req.model_seq_id is None:
            raise UserError("load_weights needs model_id, or session_id and model_seq_id")
        session = self._session(req.session_id)
        _check_optimizer(req.optimizer_config)
        model_id = f"{req.session_id}:train:{req.model_seq_id}"

        def create() -> types.LoadWeightsResponse:
            ckpt = self.store.load(path, optimizer=req.optimizer)
            host = self._host(req.base_model or ckpt.base_model)
            adapter = host.add_adapter(ckpt.spec)
            self._restore(adapter, host, ckpt)
            self._register(session, model_id, host, adapter)
            return types.LoadWeightsResponse(path=str(path), model_id=model_id)
        return self.scheduler.submit("server", create)

    @staticmethod
    def _restore(adapter: Adapter, host: BaseHost, ckpt: Checkpoint) -> None:
        host.load_tensors(adapter, ckpt.tensors)
        if ckpt.optimizer is not None and adapter.optimizer is not None:
            adapter.optimizer.load_state_dict(ckpt.optimizer)

    def weights_info(self, tinker_path: str) -> types.WeightsInfoResponse:
        base, spec = self.store.meta(TinkerPath.parse(tinker_path))
        return types.WeightsInfoResponse(base_model=base, is_lora=True, lora_rank=spec.rank, train_mlp=spec.train_mlp,
                                         train_attn=spec.train_attn, train_unembed=spec.train_unembed)

    # ---- sampling --------------------------------------------------------------------------
    def _add_sampler(self, session: Session, sampler: Sampler) -> None:
        self.samplers[sampler.sampler_id] = sampler
        session.samplers.append(sampler.sampler_id)

    def create_sampling_session(self, req: types.CreateSamplingSessionRequest) -> types.CreateSamplingSessionResponse:
        session = self._session(req.session_id)
        sampler_id = f"{req.session_id}:sample:{req.sampling_session_seq_id}"
        self._add_sampler(session, self._sampler_for(sampler_id, req.model_path, req.base_model))
        return types.CreateSamplingSessionResponse(sampling_session_id=sampler_id)

    def _sampler_for(self, sampler_id: str, model_path: str | None, base_model: str | None) -> Sampler:
        if model_path:
            ckpt = self.store.load(TinkerPath.parse(model_path), optimizer=False)
            return Sampler(sampler_id, self._host(ckpt.base_model), ckpt.spec, ckpt.tensors, model_path)
        if not base_model:
            raise UserError("a sampler needs a model_path or a base_model")
        return Sampler(sampler_id, self._host(base_model), None, None)

    def sampler(self, sampler_id: str) -> Sampler:
        if sampler_id not in self.samplers:
            raise NotFound(f"unknown sampling session {sampler_id!r}: a training model keeps only its "
                           f"{self.settings.samplers_per_model} newest snapshot samplers (serve --samplers-per-model)")
        return self.samplers[sampler_id]

    def get_sampler(self, sampler_id: str) -> types.GetSamplerResponse:
        s = self.sampler(sampler_id)
        return types.GetSamplerResponse(sampler_id=s.sampler_id, base_model=s.host.name, model_path=s.model_path)

    def asample(self, req: types.SampleRequest) -> tuple[str, list[str]]:
        if req.sampling_session_id:
            s = self.sampler(req.sampling_session_id)
        else:
            s = self._sampler_for(f"adhoc-{uuid.uuid4().hex[:8]}", req.model_path, req.base_model)
        _check_sample_request(req)
        prompt = req.prompt.to_ints()
        sp = req.sampling_params
        params = SampleParams(max_tokens=sp.max_tokens or DEFAULT_MAX_TOKENS, temperature=sp.temperature,
                              top_p=sp.top_p, top_k=sp.top_k, seed=sp.seed, stop=sp.stop)

        def run() -> bytes:
            seqs, prompt_lp = s.host.sample(s.spec, s.tensors, prompt, req.num_samples, params,
                                            bool(req.prompt_logprobs))
            return encode_sample(seqs, prompt_lp)
        request_id = self.scheduler.submit(s.sampler_id, run)
        return request_id, [f"{request_id}:{i}" for i in range(req.num_samples)]


def _check_optimizer(config: Any) -> None:
    kind = getattr(config, "type", "adamw")
    if kind != "adamw":
        raise UserError(f"optimizer {kind!r} is not served: this server trains with AdamW only")


def _check_sample_request(req: types.SampleRequest) -> None:
    unsupported = {"topk_prompt_logprobs": req.topk_prompt_logprobs, "topk_sample_logprobs": req.topk_sample_logprobs,
                   "target_prompt_logprobs": req.target_prompt_logprobs, "prompt_alt_tokens_k": req.prompt_alt_tokens_k,
                   "prompt_logprobs_last_n": req.prompt_logprobs_last_n, "record_stability_info": req.record_stability_info}
    asked = [k for k, v in unsupported.items() if v]
    if asked:
        raise UserError(f"sampling options {asked} are not implemented by this server")
    if req.num_samples < 1:
        raise UserError("num_samples must be at least 1")
    if not all(isinstance(c, types.EncodedTextChunk) for c in req.prompt.chunks):
        raise UserError("only token prompts (encoded_text chunks) are supported: no images or audio")
