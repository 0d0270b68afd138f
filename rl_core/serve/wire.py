"""The Tinker wire format as this server reads and writes it, built on the SDK's own schema.

Since SDK 0.25 the `forward_backward` body and the forward-backward and sample results are
protobuf; the schema ships in the `tinker` wheel (`tinker.proto.tinker_public_pb2`) and is imported
from there, never copied, so a schema change shows up as a failing test rather than a silent skew.
Every other body is JSON validated by the SDK's pydantic types (`tinker.types`).

The SDK changes its wire format between minor versions, so a client outside the tested range is
refused at its first request with a message that names the range (`check_sdk_version`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from packaging.version import InvalidVersion, Version
from tinker.proto import tinker_public_pb2 as pb

# The SDK versions whose wire format the tests drive this server with (tests/serve pins 0.38.0).
SDK_MIN, SDK_BELOW = Version("0.38.0"), Version("0.39.0")
SDK_RANGE = f">={SDK_MIN},<{SDK_BELOW}"
PROTO = "application/x-protobuf"


class UserError(ValueError):
    """The client asked for something this server does not do; the message says what to do instead."""


class NotFound(UserError):
    """An id or path the server does not know (answered with 404)."""


def check_sdk_version(version: str | None) -> None:
    if not version:
        return  # bare HTTP callers (curl, tests of single routes) send none
    try:
        parsed = Version(version)
    except InvalidVersion as exc:
        raise UserError(f"unreadable tinker SDK version {version!r}") from exc
    if not SDK_MIN <= parsed < SDK_BELOW:
        raise UserError(f"tinker SDK {version} is outside the range this server speaks ({SDK_RANGE}): "
                        f"pip install 'tinker{SDK_RANGE}' (the wire format changes between SDK versions)")


@dataclass
class Datum:
    """One training example: input token ids and its per-position loss inputs (1-D, same length)."""

    tokens: list[int]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class FwdBwdRequest:
    model_id: str
    seq_id: int
    loss_fn: str
    config: dict[str, float]
    forward_only: bool
    data: list[Datum]


_DTYPES = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}


def decode_forward_backward(body: bytes) -> FwdBwdRequest:
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise UserError(f"forward_backward body is not a ForwardBackwardRequest protobuf: {exc}") from exc
    config: dict[str, float] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for key, value in msg.loss_fn_config_v2.items():  # v2 wins where both are set (the SDK dual-writes)
        if value.WhichOneof("value") == "text":
            raise UserError(f"loss_fn_config[{key!r}] is a string; this server's losses take numbers only")
        config[key] = float(value.number)
    data = [_decode_datum(i, d) for i, d in enumerate(msg.data)]
    return FwdBwdRequest(model_id=msg.model_id, seq_id=int(msg.seq_id), loss_fn=msg.loss_fn, config=config,
                         forward_only=bool(msg.forward_only), data=data)


def _decode_datum(index: int, msg) -> Datum:
    tokens: list[int] = []
    for chunk in msg.model_input:
        kind = chunk.WhichOneof("chunk")
        if kind != "encoded_text":
            raise UserError(f"datum {index}: model input chunk {kind!r} is not supported (text tokens only)")
        tokens.extend(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32).tolist())
    inputs = {}
    for name, tensor in msg.loss_fn_inputs.items():
        if tensor.HasField("sparse_csr"):
            raise UserError(f"datum {index}: loss input {name!r} is sparse; send dense 1-D tensors")
        dtype = _DTYPES.get(tensor.dtype)
        if dtype is None:
            raise UserError(f"datum {index}: loss input {name!r} has an unsupported dtype {tensor.dtype}")
        array = np.frombuffer(tensor.dense, dtype=dtype)
        if len(tensor.shape) > 1:
            raise UserError(f"datum {index}: loss input {name!r} has shape {list(tensor.shape)}; "
                            "only 1-D (one value per position) inputs are supported")
        inputs[name] = array.copy()
    return Datum(tokens=tokens, inputs=inputs)


def encode_forward_backward(outputs: list[dict[str, np.ndarray]], metrics: dict[str, float]) -> bytes:
    """One ArrayRecord with a float32 field per output name, one variable-length row per datum."""
    msg = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord", metrics=metrics)
    if outputs:
        record = msg.loss_fn_outputs.add(type_tag="ArrayRecord", num_datums=len(outputs))
        for name in outputs[0]:
            rows = [np.asarray(o[name], dtype=np.float32).reshape(-1) for o in outputs]
            offsets = np.cumsum([0] + [r.nbytes for r in rows]).astype(np.int64)
            record.fields[name].CopyFrom(pb.BatchedTensor(
                data=b"".join(r.tobytes() for r in rows), offsets=offsets.tobytes(), dtype=pb.DTYPE_FLOAT32))
    return msg.SerializeToString()


@dataclass
class Sequence:
    tokens: list[int]
    logprobs: list[float]
    stopped: bool  # a stop token or string ended it (else max_tokens did)


def encode_sample(sequences: list[Sequence], prompt_logprobs: list[float] | None = None) -> bytes:
    msg = pb.SampleResponse()
    for seq in sequences:
        msg.sequences.add(stop_reason=pb.STOP_REASON_STOP if seq.stopped else pb.STOP_REASON_LENGTH,
                          tokens=np.asarray(seq.tokens, dtype=np.int32).tobytes(),
                          logprobs=np.asarray(seq.logprobs, dtype=np.float32).tobytes())
    if prompt_logprobs is not None:
        msg.prompt_logprobs = np.asarray(prompt_logprobs, dtype=np.float32).tobytes()
    return msg.SerializeToString()
