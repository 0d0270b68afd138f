"""The client's pacing and retries (cluster/k8s_client.Throttle), against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from cluster.k8s_client import URLLIB3_RETRIES, Throttle, call

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "", "gitTreeState": "", "buildDate": "",
           "goVersion": "", "compiler": "", "platform": "linux/amd64"}


class Server:
    """Answers GET /version with the queued statuses first (429 with Retry-After, 503, ...), then 200."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.seen = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.seen += 1
                code = server.answers.pop(0) if server.answers else 200
                body = json.dumps(VERSION if code == 200 else {"message": "slow down"}).encode()
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def api(self, throttle: Throttle) -> client.ApiClient:
        cfg = client.Configuration()
        cfg.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        cfg.retries = URLLIB3_RETRIES  # as cluster.k8s_client.connect configures it
        return throttle.install(client.ApiClient(cfg))


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


def test_429_and_5xx_are_retried_with_backoff(server: Server) -> None:
    slept: list[float] = []
    throttle = Throttle(qps=1000, burst=1000, sleep=slept.append)
    server.answers = [429, 503, 500]
    version = client.VersionApi(server.api(throttle)).get_code()
    assert version.git_version == "v1.30.0"
    assert server.seen == 4 and throttle.retried == 3
    assert slept == [1.0, 1.0, 2.0]  # Retry-After: 1, then 0.5 * 2**attempt


def test_retries_end_in_one_readable_error(server: Server) -> None:
    throttle = Throttle(qps=1000, burst=1000, retries=2, sleep=lambda s: None)
    server.answers = [503] * 5
    api = server.api(throttle)
    with pytest.raises(Exception, match="503"):
        call(client.VersionApi(api).get_code, api=api, action="read the version")
    assert server.seen == 3


def test_the_token_bucket_paces_requests_after_a_burst(server: Server) -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    throttle = Throttle(qps=10, burst=3, clock=lambda: now[0], sleep=sleep)
    versions = client.VersionApi(server.api(throttle))
    for _ in range(6):
        versions.get_code()
    assert server.seen == 6
    assert waits == pytest.approx([0.1, 0.1, 0.1])  # 3 at once, then one per 1/qps


class ResettingServer(Server):
    """Like Server, but the first `resets` answers promise a body and drop the connection halfway."""

    def __init__(self, resets: int) -> None:
        super().__init__()
        self.resets = resets
        outer = self
        base = self.httpd.RequestHandlerClass

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802
                if outer.resets > 0:
                    outer.resets -= 1
                    outer.seen += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"major": "1"')
                    self.wfile.flush()
                    self.connection.shutdown(2)  # a reset mid-body, as a restarting API server does
                    return
                super().do_GET()

        self.httpd.RequestHandlerClass = Handler


def test_a_connection_dropped_mid_answer_is_retried_like_a_5xx() -> None:
    server = ResettingServer(resets=2)
    try:
        slept: list[float] = []
        throttle = Throttle(qps=1000, burst=1000, sleep=slept.append)
        version = client.VersionApi(server.api(throttle)).get_code()
        assert version.git_version == "v1.30.0"
        assert server.seen == 3 and throttle.retried == 2 and slept == [0.5, 1.0]
    finally:
        server.httpd.shutdown()


def test_transport_errors_past_the_retries_are_explained() -> None:
    server = ResettingServer(resets=5)
    try:
        throttle = Throttle(qps=1000, burst=1000, retries=1, sleep=lambda s: None)
        api = server.api(throttle)
        with pytest.raises(Exception, match="cannot reach the Kubernetes API server"):
            call(client.VersionApi(api).get_code, api=api, action="read the version")
        assert server.seen == 2
    finally:
        server.httpd.shutdown()


class DiscoveryServer(Server):
    """Answers GET /apis with an APIGroupList whose kueue.x-k8s.io group serves `kueue` versions."""

    def __init__(self, kueue: list[str]) -> None:
        super().__init__()
        groups = [{"name": "batch", "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
                   "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"}}]
        if kueue:
            versions = [{"groupVersion": f"kueue.x-k8s.io/{v}", "version": v} for v in kueue]
            groups.append({"name": "kueue.x-k8s.io", "versions": versions, "preferredVersion": versions[0]})
        body = json.dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd.RequestHandlerClass = Handler


@pytest.mark.parametrize(("served", "chosen"), [(["v1beta2", "v1beta1"], "v1beta2"), (["v1beta1"], "v1beta1"),
                                                (["v1beta2"], "v1beta2"), (["v1alpha1"], None), ([], None)])
def test_kueue_version_is_discovered_newest_first(served: list[str], chosen: str | None) -> None:
    from cluster.k8s_view import kueue_version

    server = DiscoveryServer(served)
    try:
        assert kueue_version(server.api(Throttle())) == chosen
    finally:
        server.httpd.shutdown()


def test_work_that_can_wait_takes_a_token_only_if_one_is_saved_up() -> None:
    now = [0.0]
    budget = Throttle(qps=2, burst=2, clock=lambda: now[0], sleep=lambda s: pytest.fail("try_take must not wait"))
    assert [budget.try_take() for _ in range(3)] == [True, True, False]  # the burst, then nothing
    now[0] += 0.5  # one token refilled at 2/s
    assert [budget.try_take() for _ in range(2)] == [True, False]
