"""A server started with an API key: every route wants it, except the health check a readiness
probe calls (a probe carries no key)."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("tinker")
from rl_core.serve.local import running  # noqa: E402
from rl_core.serve.service import ServeSettings  # noqa: E402


def test_the_api_key_guards_every_route_but_the_health_check(tmp_path):
    settings = ServeSettings(models=[], state_dir=tmp_path, api_key="tml-secret")
    with running(settings, hosts={}) as url:
        assert httpx.get(f"{url}/api/v1/healthz").status_code == 200
        assert httpx.get(f"{url}/api/v1/get_server_capabilities").status_code == 401
        wrong = httpx.get(f"{url}/api/v1/get_server_capabilities", headers={"X-API-Key": "tml-other"})
        assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["detail"]
        ok = httpx.get(f"{url}/api/v1/get_server_capabilities", headers={"X-API-Key": "tml-secret"})
        assert ok.status_code == 200 and ok.json() == {"supported_models": []}
