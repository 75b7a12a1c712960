"""The server's doors: which hosts it answers to, which origins may drive it, CORS for allowed ones.

In process through httpx's ASGI transport (the headers are what a browser sends), plus a WebSocket
handshake over a real socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
import pytest
from httpx_ws import WebSocketUpgradeError, aconnect_ws

from _fleet_helpers import Server
from _server_helpers import Script, client, live_server
from pydantic_deep.server import create_app

TOKEN = "doors-token"


def code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


async def test_without_a_token_only_loopback_names_and_allowed_hosts_are_answered() -> None:
    app = create_app(Script(["ok"]).agent(), allowed_hosts=["deep.example.com"])
    async with client(app) as http:
        answers = {
            host: (await http.get("/runs", headers={"host": host})).status_code
            for host in [
                "localhost:8000",
                "127.0.0.1:8000",
                "127.9.9.9",
                "[::1]:8000",
                "app.localhost:3000",
                "deep.example.com",
                "DEEP.example.com:443",
                "evil.example",  # DNS rebinding: a page on evil.example that resolves to 127.0.0.1
                "evil.example:8000",
                "localhost.evil.example",
                "10.0.0.1:8000",
            ]
        }
        refused = await http.post("/runs", json={"prompt": "x"}, headers={"host": "evil.example"})
    assert answers == {
        "localhost:8000": 200,
        "127.0.0.1:8000": 200,
        "127.9.9.9": 200,
        "[::1]:8000": 200,
        "app.localhost:3000": 200,
        "deep.example.com": 200,
        "DEEP.example.com:443": 200,
        "evil.example": 421,
        "evil.example:8000": 421,
        "localhost.evil.example": 421,
        "10.0.0.1:8000": 421,
    }
    assert refused.status_code == 421 and code(refused) == "misdirected_request"


async def test_with_a_token_any_host_unless_hosts_are_listed() -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with client(create_app(Script(["ok"]).agent(), token=TOKEN), **auth) as http:
        anywhere = (await http.get("/runs", headers={"host": "deep.example.com"})).status_code
    app = create_app(Script(["ok"]).agent(), token=TOKEN, allowed_hosts=["deep.example.com"])
    async with client(app, **auth) as http:
        listed = (await http.get("/runs", headers={"host": "deep.example.com"})).status_code
        other = (await http.get("/runs", headers={"host": "other.example.com"})).status_code
    assert (anywhere, listed, other) == (200, 200, 421)


async def test_pages_on_other_origins_cannot_start_or_cancel_runs() -> None:
    async with client(create_app(Script(["ok"]).agent())) as http:
        evil = {"origin": "http://evil.example"}
        started = await http.post("/runs", json={"prompt": "x"}, headers=evil)
        chat = await http.get("/chat", params={"prompt": "x"}, headers=evil)
        image = await http.get("/chat", params={"prompt": "x"}, headers={"sec-fetch-site": "cross-site"})
        null = await http.post("/runs", json={"prompt": "x"}, headers={"origin": "null"})
        other_port = await http.post("/runs", json={"prompt": "x"}, headers={"origin": "http://localhost:3000"})
        # The dashboard (same origin), a command-line client (no Origin) and a direct visit may.
        same = await http.post("/runs", json={"prompt": "x"}, headers={"origin": "http://localhost"})
        run_id = same.json()["run_id"]
        cancel = await http.post(f"/runs/{run_id}/cancel", headers=evil)
        plain = await http.post("/runs", json={"prompt": "x"})
        typed = await http.get("/chat", params={"prompt": "x"}, headers={"sec-fetch-site": "none"})
        # Reading is not refused: without CORS headers the browser keeps the answer from the page.
        listed = await http.get("/runs", headers=evil)
    refusals = [started, chat, image, null, other_port, cancel]
    assert [(r.status_code, code(r)) for r in refusals] == [(403, "forbidden_origin")] * 6
    assert (same.status_code, plain.status_code, typed.status_code) == (201, 201, 200)
    assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


async def test_cors_origins_get_preflights_and_headers_others_do_not() -> None:
    ui = "http://localhost:3000"
    app = create_app(Script(["ok"]).agent(), cors_origins=[ui])
    preflight_headers = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    async with client(app) as http:
        preflight = await http.options("/runs", headers={"origin": ui, **preflight_headers})
        started = await http.post("/runs", json={"prompt": "x"}, headers={"origin": ui})
        stream = await http.get(f"/runs/{started.json()['run_id']}/events", headers={"origin": ui})
        foreign_preflight = await http.options("/runs", headers={"origin": "http://evil.example", **preflight_headers})
        foreign = await http.post("/runs", json={"prompt": "x"}, headers={"origin": "http://evil.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ui
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"].lower() == "content-type"
    assert started.status_code == 201 and started.headers["access-control-allow-origin"] == ui
    assert "Location" in started.headers["access-control-expose-headers"]
    assert stream.status_code == 200 and stream.headers["access-control-allow-origin"] == ui
    assert foreign_preflight.status_code == 400 and "access-control-allow-origin" not in foreign_preflight.headers
    assert foreign.status_code == 403


async def test_cors_with_a_token_preflights_without_it_and_requests_need_it() -> None:
    ui = "https://app.example.com"
    app = create_app(Script(["ok"]).agent(), token=TOKEN, cors_origins=["*"])
    async with client(app) as http:
        preflight = await http.options(
            "/runs",
            headers={
                "origin": ui,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        anonymous = await http.post("/runs", json={"prompt": "x"}, headers={"origin": ui})
        allowed = await http.post(
            "/runs", json={"prompt": "x"}, headers={"origin": ui, "authorization": f"Bearer {TOKEN}"}
        )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    # The 401 carries CORS headers, so the page can read why it was refused.
    assert anonymous.status_code == 401 and anonymous.headers["access-control-allow-origin"] == "*"
    assert allowed.status_code == 201


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cors_origins": ["*"]}, "cors origin '*' lets any web page call this server: it needs a token"),
        (
            {"cors_origins": ["localhost:3000"]},
            "cors origin 'localhost:3000' is not an origin: use scheme://host[:port]",
        ),
        (
            {"cors_origins": ["http://a.example/app"]},
            "cors origin 'http://a.example/app' is not an origin: use scheme://host[:port]",
        ),
    ],
)
def test_bad_origin_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        create_app(Script(["ok"]).agent(), **settings)
    assert str(refused.value) == message


async def test_websocket_handshakes_from_other_origins_are_refused() -> None:
    app = create_app(Script(["ok"]).agent(), cors_origins=["http://localhost:3000"])
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        run_id = (await http.post("/runs", json={"prompt": "x"})).json()["run_id"]
        ws_url = url.replace("http", "ws") + f"/runs/{run_id}/ws"
        with pytest.raises(WebSocketUpgradeError) as refused:
            async with aconnect_ws(ws_url, http, headers={"origin": "http://evil.example"}):
                pass
        async with aconnect_ws(ws_url, http, headers={"origin": "http://localhost:3000"}) as ws:
            first = await ws.receive_json()
    assert refused.value.response.status_code == 403
    assert first["event_type"] == "agent_start"


async def test_a_websocket_accepts_the_bearer_header_and_no_token_reaches_the_log() -> None:
    secret = "s3cret-never-logged"
    env = {**os.environ, "PYDANTIC_DEEP_DEMO_DELAY": "0", "NO_COLOR": "1"}
    server = Server("--model", "demo", "--token", secret, env=env, name="doors")
    auth = {"authorization": f"Bearer {secret}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as http:
            while True:  # handshake: the server answers once it has started
                assert server.proc.poll() is None, server.output()
                try:
                    await http.get("/runs")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            run_id = (await http.post("/runs", json={"prompt": "hi"})).json()["run_id"]
            ws_url = server.url.replace("http", "ws") + f"/runs/{run_id}/ws"
            async with aconnect_ws(ws_url, http) as ws:  # the header, as every HTTP endpoint takes it
                by_header = await ws.receive_json()
            async with httpx.AsyncClient() as anonymous:
                async with aconnect_ws(f"{ws_url}?last_event_id=-1&token={secret}", anonymous) as ws:
                    by_query = await ws.receive_json()
                await anonymous.get(f"{server.url}/runs?token={secret}&limit=1")
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        log = server.output()
    finally:
        server.stop()
    assert by_header["seq"] == 0 and by_query["seq"] == 0
    assert secret not in log
    assert f'"WebSocket /runs/{run_id}/ws?last_event_id=-1&token=[redacted]" [accepted]' in log
    assert '"GET /runs?token=[redacted]&limit=1 HTTP/1.1" 401' in log
