"""The Jupyter server extension, in a real Jupyter server (pytest-jupyter), forwarding to a real
local HTTP server that stands in for the data access service and records what it received.

The tests are plain functions that drive pytest-jupyter's own event loop, so they do not depend on
(or disturb) the pytest-asyncio loop the rest of the suite uses.
"""

from __future__ import annotations

import asyncio
import json
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (fixtures: jp_fetch, jp_serverapp, ...)
from tornado import web
from tornado.httpclient import HTTPResponse
from tornado.httpserver import HTTPServer  # noqa: E402

TOKEN = "server-token-0123456789abcdef"
API = "dataaccess/api/v1"


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StandInService:
    """What the stand-in service received, and where it listens."""

    url: str
    received: list[Received] = field(default_factory=list)


class _RecordingHandler(web.RequestHandler):
    def initialize(self, service: StandInService) -> None:
        self.service = service

    def _answer(self) -> None:
        self.service.received.append(
            Received(
                method=self.request.method or "",
                path=self.request.path,
                query=self.request.query,
                headers=dict(self.request.headers),
                body=self.request.body,
            )
        )
        if self.request.path.endswith("/missing"):
            self.set_status(404)
            self.finish({"status": 404, "message": "No such dataset"})
        elif self.request.path.endswith("/data"):
            self.set_header("Content-Type", "text/csv")
            self.finish(b"a,b\n1,2\n")
        elif self.request.method == "POST":
            self.set_status(201)
            self.finish({"id": 7, "status": "approved"})
        else:
            self.finish({"items": [], "total": 0})

    get = post = delete = _answer  # type: ignore[assignment]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jp_asyncio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh loop for pytest-jupyter's server, restoring whatever loop was current before."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            previous = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            previous = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(previous)


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyterhub_dataaccess": True}}}


@pytest.fixture
def service(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[StandInService]:
    port = _free_port()
    stand_in = StandInService(url=f"http://127.0.0.1:{port}/services/dataaccess/")
    app = web.Application(
        [(r"/services/dataaccess/api/v1/.*", _RecordingHandler, {"service": stand_in})]
    )

    async def start() -> HTTPServer:
        server = HTTPServer(app)
        server.listen(port, "127.0.0.1")
        return server

    server = jp_asyncio_loop.run_until_complete(start())
    yield stand_in
    server.stop()


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, service: StandInService) -> StandInService:
    monkeypatch.setenv("DATAACCESS_URL", service.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    return service


@pytest.fixture
def fetch(jp_fetch: Any, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Callable[..., HTTPResponse]:
    """jp_fetch, run to completion; answers with error statuses are returned, not raised."""

    def _fetch(*parts: str, **kwargs: Any) -> HTTPResponse:
        kwargs.setdefault("raise_error", False)
        return jp_asyncio_loop.run_until_complete(jp_fetch(*parts, **kwargs))

    return _fetch


@pytest.fixture
def fetch_raw(
    jp_serverapp: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> Callable[..., HTTPResponse]:
    """Fetch a path below base_url exactly as written (no escaping), with the server's token."""

    def _fetch(path: str, **kwargs: Any) -> HTTPResponse:
        headers = {**jp_auth_header, **kwargs.pop("headers", {})}
        future = http_server_client.fetch(
            jp_base_url + path, headers=headers, raise_error=False, **kwargs
        )
        return jp_asyncio_loop.run_until_complete(future)

    return _fetch


def _json(response: HTTPResponse) -> Any:
    return json.loads(response.body)


def test_get_is_forwarded_with_query_and_server_token(configured, fetch):
    # When the panel lists datasets with a poll marker
    response = fetch(
        API,
        "datasets",
        params={"q": "pen guins", "limit": "50", "no_track_activity": "1"},
        headers={"Cookie": "_xsrf=abc; jupyterhub-session-id=secret-cookie"},
    )
    # Then the service answer is relayed and the service saw the path, query and server token
    assert response.code == 200
    assert _json(response) == {"items": [], "total": 0}
    (seen,) = configured.received
    assert seen.method == "GET"
    assert seen.path == "/services/dataaccess/api/v1/datasets"
    assert sorted(seen.query.split("&")) == ["limit=50", "q=pen+guins"]
    assert seen.headers["Authorization"] == f"token {TOKEN}"
    assert "Cookie" not in seen.headers
    assert "secret-cookie" not in json.dumps(seen.headers)


def test_browser_authorization_is_replaced_by_server_token(configured, fetch, jp_auth_header):
    fetch(API, "me")
    (seen,) = configured.received
    assert seen.headers["Authorization"] == f"token {TOKEN}"
    assert jp_auth_header["Authorization"] not in seen.headers.values()


def test_post_forwards_json_body_and_relays_status(configured, fetch):
    body = {"dataset": "penguins", "justification": "model", "days": 30}
    response = fetch(API, "requests", method="POST", body=json.dumps(body))
    assert response.code == 201
    assert _json(response) == {"id": 7, "status": "approved"}
    (seen,) = configured.received
    assert seen.method == "POST"
    assert json.loads(seen.body) == body
    assert seen.headers["Content-Type"] == "application/json"


def test_post_without_body_is_forwarded(configured, fetch):
    response = fetch(
        API, "requests", "7", "withdraw", method="POST", body=b"", allow_nonstandard_methods=True
    )
    assert response.code == 201
    assert configured.received[0].path.endswith("/api/v1/requests/7/withdraw")


def test_delete_is_forwarded(configured, fetch):
    response = fetch(API, "grants", "12", method="DELETE")
    assert response.code == 200
    assert configured.received[0].method == "DELETE"
    assert configured.received[0].path.endswith("/api/v1/grants/12")


def test_service_errors_and_content_type_are_relayed(configured, fetch):
    missing = fetch(API, "datasets", "missing")
    assert missing.code == 404
    assert _json(missing) == {"status": 404, "message": "No such dataset"}
    data = fetch(API, "datasets", "penguins", "data")
    assert data.code == 200
    assert data.headers["Content-Type"].startswith("text/csv")
    assert data.body == b"a,b\n1,2\n"


def test_body_over_one_megabyte_is_refused(configured, fetch):
    big = json.dumps({"justification": "x" * (1024 * 1024)})
    response = fetch(API, "requests", method="POST", body=big)
    assert response.code == 413
    assert _json(response)["status"] == 413
    assert configured.received == []


def test_invalid_json_is_refused(configured, fetch):
    response = fetch(API, "requests", method="POST", body=b"{not json")
    assert response.code == 400
    assert set(_json(response)) == {"status", "message"}
    assert configured.received == []


@pytest.mark.parametrize(
    "path",
    [
        "datasets/../me",
        "datasets/./x",
        "datasets//x",
        "datasets/",
        "datasets/%2e%2e/me",
        "datasets/%2E%2e",
        "datasets%2f..%2fme",
        "datasets/%2F",
        "datasets/a%5cb",
        "",
    ],
)
def test_traversal_is_refused(configured, fetch_raw, path):
    response = fetch_raw(f"{API}/{path}")
    assert response.code == 400, path
    assert _json(response)["status"] == 400
    assert "Traceback" not in response.body.decode()
    assert configured.received == []


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["me", "datasets", "requests", "grants/1", "audit"])
def test_no_credentials_is_refused_on_every_route(
    configured, http_server_client, jp_serverapp, jp_base_url, jp_asyncio_loop, method, path
):
    # When a request comes with no token and no cookie
    future = http_server_client.fetch(
        f"{jp_base_url}{API}/{path}",
        method=method,
        body=b"{}" if method == "POST" else None,
        raise_error=False,
        follow_redirects=False,
    )
    response = jp_asyncio_loop.run_until_complete(future)
    # Then it is refused and nothing reaches the service
    assert response.code in (401, 403)
    assert _json(response)["status"] == response.code
    assert configured.received == []


def test_wrong_token_is_refused(configured, fetch):
    response = fetch(API, "me", headers={"Authorization": "token not-the-right-one"})
    assert response.code in (401, 403)
    assert configured.received == []


def test_without_service_url_answers_503(monkeypatch, fetch):
    monkeypatch.delenv("DATAACCESS_URL", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    response = fetch(API, "me")
    assert response.code == 503
    body = _json(response)
    assert body["status"] == 503
    assert "not configured" in body["message"]


def test_without_server_token_answers_503(monkeypatch, service, fetch):
    monkeypatch.setenv("DATAACCESS_URL", service.url)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    response = fetch(API, "me")
    assert response.code == 503
    assert "not configured" in _json(response)["message"]
    assert service.received == []


def test_service_down_answers_502_without_leaking_the_token(monkeypatch, fetch, caplog):
    monkeypatch.setenv("DATAACCESS_URL", f"http://127.0.0.1:{_free_port()}/services/dataaccess/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    with caplog.at_level("DEBUG"):
        response = fetch(API, "datasets")
    assert response.code == 502
    assert _json(response) == {"status": 502, "message": "The data access service did not answer"}
    assert TOKEN not in caplog.text


def test_errors_never_carry_a_traceback(configured, fetch):
    response = fetch(API, "requests", method="POST", body=b"\xff\xfe")
    assert response.code == 400
    assert "Traceback" not in response.body.decode()
