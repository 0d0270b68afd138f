"""The HTTP face: Starlette routes for the Tinker API paths the SDK calls.

Starlette rather than FastAPI: every JSON body is validated by the SDK's own pydantic types (the
schema the client serialised with, not a second copy), and `forward_backward` is a protobuf body,
so FastAPI's signature-driven validation and OpenAPI generation would only duplicate that schema;
Starlette is the layer FastAPI runs on, with nothing between a route and its request.

Errors: a request the server cannot honour is a 400 (404 for an unknown id or path) whose JSON
`detail` says why; a failure while running a queued operation reaches the client through its future
(`{"error", "category"}`), which the SDK raises as `RequestFailedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pydantic
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tinker import types

from rl_core.serve.host import BaseHost
from rl_core.serve.scheduler import Scheduler
from rl_core.serve.service import ServeSettings, TinkerService
from rl_core.serve.wire import (
    PROTO,
    SDK_RANGE,
    NotFound,
    UserError,
    check_sdk_version,
    decode_forward_backward,
)

log = logging.getLogger(__name__)
HEALTH_PATH = "/api/v1/healthz"
POLL_S = 20.0  # a retrieve_future call waits this long for its result (the SDK's own timeout is 45 s)


def _json(model: pydantic.BaseModel | dict | None, status: int = 200) -> JSONResponse:
    body = model.model_dump(mode="json", exclude_none=True) if isinstance(model, pydantic.BaseModel) else model
    return JSONResponse(body, status_code=status)


async def _body(request: Request, model: type[pydantic.BaseModel]) -> Any:
    try:
        return model.model_validate(await request.json())
    except (pydantic.ValidationError, ValueError) as exc:
        raise UserError(f"{request.url.path}: the body is not a valid {model.__name__}: {exc}") from exc


def _future(request_id: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"request_id": request_id, **extra})


def build_app(settings: ServeSettings, hosts: dict[str, BaseHost]) -> Starlette:
    """The ASGI app; `hosts` are the base models already loaded (one per served name)."""
    state: dict[str, TinkerService] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        scheduler = Scheduler(asyncio.get_running_loop())
        state["svc"] = TinkerService(settings, hosts, scheduler)
        try:
            yield
        finally:
            scheduler.close()

    def svc() -> TinkerService:
        return state["svc"]

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def capabilities(request: Request) -> Response:
        return _json(svc().capabilities())

    async def client_config(request: Request) -> Response:
        return _json(svc().client_config(await _body(request, types.ClientConfigRequest)))

    async def dynamic_config(request: Request) -> Response:
        return _json(types.ClientDynamicConfigResponse())

    async def create_session(request: Request) -> Response:
        return _json(svc().create_session(await _body(request, types.CreateSessionRequest)))

    async def heartbeat(request: Request) -> Response:
        req = await _body(request, types.SessionHeartbeatRequest)
        if req.session_id not in svc().sessions:
            return _json({"detail": f"session {req.session_id} has finished"}, 410)  # stops the SDK's heartbeat
        return _json({"type": "session_heartbeat"})

    async def finish_session(request: Request) -> Response:
        svc().finish_session(request.path_params["session_id"])
        return _json(None)

    async def telemetry(request: Request) -> Response:
        return _json({"status": "accepted"})  # accepted and dropped: nothing leaves this machine

    async def create_model(request: Request) -> Response:
        req = await _body(request, types.CreateModelRequest)
        return _future(svc().create_model(req), model_id=f"{req.session_id}:train:{req.model_seq_id}")

    async def get_info(request: Request) -> Response:
        return _json(svc().get_info((await _body(request, types.GetInfoRequest)).model_id))

    async def forward_backward(request: Request) -> Response:
        if request.headers.get("content-encoding"):
            raise UserError("compressed forward_backward bodies are not accepted (the server's client config disables them)")
        req = decode_forward_backward(await request.body())
        return _future(svc().forward_backward(req), model_id=req.model_id)

    async def optim_step(request: Request) -> Response:
        return _future(svc().optim_step(await _body(request, types.OptimStepRequest)))

    async def save_weights(request: Request) -> Response:
        return _future(svc().save_weights(await _body(request, types.SaveWeightsRequest)))

    async def save_for_sampler(request: Request) -> Response:
        return _future(svc().save_weights_for_sampler(await _body(request, types.SaveWeightsForSamplerRequest)))

    async def load_weights(request: Request) -> Response:
        return _future(svc().load_weights(await _body(request, types.LoadWeightsRequest)))

    async def weights_info(request: Request) -> Response:
        body = await request.json()
        return _json(svc().weights_info(str(body.get("tinker_path", "")) if isinstance(body, dict) else ""))

    async def create_sampling_session(request: Request) -> Response:
        return _json(svc().create_sampling_session(await _body(request, types.CreateSamplingSessionRequest)))

    async def get_sampler(request: Request) -> Response:
        return _json(svc().get_sampler(request.path_params["sampler_id"]))

    async def asample(request: Request) -> Response:
        request_id, seq_ids = svc().asample(await _body(request, types.SampleRequest))
        return _future(request_id, sample_sequence_ids=seq_ids)

    async def retrieve_future(request: Request) -> Response:
        req = await _body(request, types.FutureRetrieveRequest)
        slot = svc().scheduler.slot(req.request_id)
        if slot is None:
            raise NotFound(f"unknown request_id {req.request_id!r} (the server may have restarted)")
        try:
            await asyncio.wait_for(slot.done.wait(), timeout=POLL_S)
        except TimeoutError:
            return _json({"type": "try_again", "request_id": req.request_id, "queue_state": "active"})
        svc().scheduler.delivered(slot)
        if slot.error is not None:
            return _json({"error": slot.error, "category": slot.category})
        if isinstance(slot.result, bytes):
            return Response(slot.result, media_type=PROTO)
        return _json(slot.result)

    async def not_implemented(request: Request) -> Response:
        raise NotFound(f"{request.method} {request.url.path} is not implemented by openrl-agent serve "
                       f"(tinker SDK {SDK_RANGE}); see docs/tinker.md for the routes it serves")

    post = ["POST"]
    routes = [
        Route(HEALTH_PATH, healthz), Route("/api/v1/get_server_capabilities", capabilities),
        Route("/api/v1/client/config", client_config, methods=post),
        Route("/api/v1/client/dynamic_config", dynamic_config, methods=post),
        Route("/api/v1/create_session", create_session, methods=post),
        Route("/api/v1/session_heartbeat", heartbeat, methods=post),
        Route("/api/v1/sessions/{session_id}/finish", finish_session, methods=post),
        Route("/api/v1/telemetry", telemetry, methods=post),
        Route("/api/v1/create_model", create_model, methods=post),
        Route("/api/v1/get_info", get_info, methods=post),
        Route("/api/v1/forward_backward", forward_backward, methods=post),
        Route("/api/v1/optim_step", optim_step, methods=post),
        Route("/api/v1/save_weights", save_weights, methods=post),
        Route("/api/v1/save_weights_for_sampler", save_for_sampler, methods=post),
        Route("/api/v1/load_weights", load_weights, methods=post),
        Route("/api/v1/weights_info", weights_info, methods=post),
        Route("/api/v1/create_sampling_session", create_sampling_session, methods=post),
        Route("/api/v1/samplers/{sampler_id}", get_sampler),
        Route("/api/v1/asample", asample, methods=post),
        Route("/api/v1/retrieve_future", retrieve_future, methods=post),
        Route("/{path:path}", not_implemented, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]

    async def user_error(request: Request, exc: Exception) -> Response:
        return _json({"detail": str(exc)}, 404 if isinstance(exc, NotFound) else 400)

    async def guard(request: Request, call_next):
        """The API key (when the server has one) and the SDK version, checked on every request but
        the health check (a readiness probe carries no key)."""
        if settings.api_key and request.url.path != HEALTH_PATH and request.headers.get("x-api-key") != settings.api_key:
            return _json({"detail": "missing or wrong X-API-Key"}, 401)
        try:
            check_sdk_version(request.headers.get("x-stainless-package-version"))
        except UserError as exc:
            return _json({"detail": str(exc)}, 400)
        return await call_next(request)

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={UserError: user_error},
                     middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
