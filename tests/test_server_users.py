"""Users: each token a principal, each run its principal's; `admin` sees all; an application's own auth.

In process (httpx ASGI transport), across two servers on one Redis (a fleet), and over a real WebSocket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from starlette.requests import HTTPConnection

from _fleet_helpers import shared_redis_buses
from _server_helpers import Script, client, events_of, live_server, parse_sse
from pydantic_deep.server import ServerConfigError, create_app, read_tokens_file, serve

TOKENS = {"alice": "alice-secret", "bob": "bob-secret", "admin": "admin-secret"}


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[name]}"}


async def every_view(http: httpx.AsyncClient, run_id: str, who: str) -> dict[str, Any]:
    """What `who` gets for the run on each endpoint."""
    headers = bearer(who)
    listed = (await http.get("/runs", headers=headers)).json()["runs"]
    return {
        "listed": run_id in [r["run_id"] for r in listed],
        "status": (await http.get(f"/runs/{run_id}", headers=headers)).status_code,
        "events": (await http.get(f"/runs/{run_id}/events", headers=headers)).status_code,
        "chat_resume": (
            await http.get("/chat", params={"prompt": "x"}, headers={**headers, "last-event-id": f"{run_id}:0"})
        ).status_code,
        "cancel": (await http.post(f"/runs/{run_id}/cancel", headers=headers)).status_code,
    }


async def test_a_run_is_seen_only_by_its_principal_and_admin() -> None:
    async with client(create_app(Script(["mine"]).agent(), tokens=TOKENS)) as http:
        run_id = (await http.post("/runs", json={"prompt": "alice's"}, headers=bearer("alice"))).json()["run_id"]
        events = events_of(parse_sse((await http.get(f"/runs/{run_id}/events", headers=bearer("alice"))).text))
        views = {who: await every_view(http, run_id, who) for who in ("alice", "bob", "admin")}
        nobody = await http.get("/runs", headers={"authorization": "Bearer wrong"})
    assert events[-1]["event_type"] == "agent_end"
    seen = {"listed": True, "status": 200, "events": 200, "chat_resume": 200, "cancel": 202}
    unseen = {"listed": False, "status": 404, "events": 404, "chat_resume": 404, "cancel": 404}
    assert views == {"alice": seen, "bob": unseen, "admin": seen}
    assert nobody.status_code == 401


async def test_another_principal_cannot_follow_a_run_over_websocket() -> None:
    async with live_server(create_app(Script(["mine"]).agent(), tokens=TOKENS)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            run_id = (await http.post("/runs", json={"prompt": "x"}, headers=bearer("alice"))).json()["run_id"]
            ws_url = url.replace("http", "ws") + f"/runs/{run_id}/ws"
            codes = {}
            for who in ("alice", "bob"):
                async with httpx.AsyncClient(headers=bearer(who)) as user:
                    async with aconnect_ws(ws_url, user) as ws:
                        try:
                            while True:
                                await ws.receive_json()
                        except WebSocketDisconnect as closed:
                            codes[who] = closed.code
    assert codes == {"alice": 1000, "bob": 4404}


@pytest.mark.redis
async def test_ownership_holds_across_the_fleet() -> None:
    script = Script(["fleet"])
    async with (
        shared_redis_buses() as (here, there),
        client(create_app(script.agent(), bus=here, tokens=TOKENS)) as first,
    ):
        run_id = (await first.post("/runs", json={"prompt": "x"}, headers=bearer("alice"))).json()["run_id"]
        await first.get(f"/runs/{run_id}/events", headers=bearer("alice"))
        async with client(create_app(script.agent(), bus=there, tokens=TOKENS)) as second:
            views = {who: await every_view(second, run_id, who) for who in ("alice", "bob", "admin")}
    assert [views[who]["status"] for who in ("alice", "bob", "admin")] == [200, 404, 200]
    assert [views[who]["listed"] for who in ("alice", "bob", "admin")] == [True, False, True]
    assert [views[who]["events"] for who in ("alice", "bob", "admin")] == [200, 404, 200]


def test_the_tokens_file(tmp_path: Path) -> None:
    good = tmp_path / "tokens"
    good.write_text("# name token\nalice alice-secret\n\n  bob   bob-secret  \n")
    assert read_tokens_file(good) == {"alice": "alice-secret", "bob": "bob-secret"}
    problems = {
        "alice\n": "tokens file line 1: expected `NAME TOKEN`, got 1 field(s)",
        "alice a b\n": "tokens file line 1: expected `NAME TOKEN`, got 3 field(s)",
        "alice a\nalice b\n": "tokens file line 2: 'alice' is given twice",
        "# nobody\n": f"the tokens file {str(tmp_path / 'bad')!r} names no one: write one `NAME TOKEN` per line",
    }
    for text, message in problems.items():
        (tmp_path / "bad").write_text(text)
        with pytest.raises(ValueError) as refused:
            read_tokens_file(tmp_path / "bad")
        assert str(refused.value) == message
    with pytest.raises(ValueError, match="the token of 'bob' is also another principal's"):
        create_app(Script(["x"]).agent(), tokens={"alice": "same", "bob": "same"})
    with pytest.raises(ServerConfigError, match="cannot read the tokens file"):
        serve(tokens_file=str(tmp_path / "missing"))
    with pytest.raises(ServerConfigError, match=r"refusing to listen on '0\.0\.0\.0' without a token"):
        serve(host="0.0.0.0")
    (tmp_path / "users").write_text("alice alice-secret\n")
    with pytest.raises(ServerConfigError, match=r"no such model|unknown model"):  # got past the token check
        serve(host="0.0.0.0", tokens_file=str(tmp_path / "users"), model="no-such-model")


# ---- an application's own authentication: a JWT (HS256) verified with the standard library ----------------

SIGNING_KEY = b"an application's signing key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def jwt_principal(request: HTTPConnection) -> str | None:
    """The `sub` of a valid HS256 JWT in `Authorization: Bearer`, or None (401)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    parts = token.split(".")
    if scheme.lower() != "bearer" or len(parts) != 3:
        return None
    expected = hmac.new(SIGNING_KEY, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(_b64(expected), parts[2]):
        return None
    claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    return claims.get("sub")


async def test_an_applications_own_auth_decides_the_principal() -> None:
    carol, dave = make_jwt({"sub": "carol"}), make_jwt({"sub": "dave"})
    forged = make_jwt({"sub": "carol"})[:-2] + "xx"
    async with client(create_app(Script(["jwt"]).agent(), auth=jwt_principal)) as http:
        created = await http.post("/runs", json={"prompt": "x"}, headers={"authorization": f"Bearer {carol}"})
        run_id = created.json()["run_id"]
        mine = await http.get(f"/runs/{run_id}", headers={"authorization": f"Bearer {carol}"})
        theirs = await http.get(f"/runs/{run_id}", headers={"authorization": f"Bearer {dave}"})
        refused = await http.get("/runs", headers={"authorization": f"Bearer {forged}"})
        page = await http.get("/")
    assert (created.status_code, mine.status_code, theirs.status_code, refused.status_code) == (201, 200, 404, 401)
    assert page.status_code == 200
