"""Conversations over `/runs`: a run's messages as it ended, and the next turn with `continue_from`.

On the in-process bus and on Redis, where the next turn may start on another server of the fleet.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pydantic_ai.messages import ModelMessagesTypeAdapter, ModelRequest, ModelResponse, TextPart, UserPromptPart

from _fleet_helpers import redis_or_skip
from _server_helpers import Script, client, events_of, parse_sse
from pydantic_deep import DeepAgentDeps, create_deep_agent, demo_model
from pydantic_deep.bus import EventBus, InMemoryEventBus, RedisEventBus
from pydantic_deep.server import create_app

REDIS_URL = "redis://127.0.0.1:6379/0"


async def buses(kind: str) -> tuple[EventBus, EventBus]:
    """Two servers' buses: one in-process bus shared, or two clients of one Redis prefix (skips without Redis)."""
    if kind == "memory":
        bus = InMemoryEventBus()
        return bus, bus
    prefix = f"pydantic-deep-test:{uuid.uuid4().hex}:"
    redis_or_skip(REDIS_URL)
    return RedisEventBus(REDIS_URL, prefix=prefix), RedisEventBus(REDIS_URL, prefix=prefix)


async def finish(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    return events_of(parse_sse((await http.get(f"/runs/{run_id}/events")).text))


def turns(messages: list[Any]) -> list[tuple[str, str]]:
    """(who, text) for each prompt and answer."""
    out: list[tuple[str, str]] = []
    for message in messages:
        for part in message.parts:
            if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                out.append(("user", part.content))
            elif isinstance(part, TextPart):
                out.append(("model", part.content))
    return out


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_conversation_continues_from_a_runs_messages(kind: str) -> None:
    here, there = await buses(kind)
    script = Script(["an answer"])
    try:
        async with client(create_app(script.agent(), bus=here)) as first:
            run_id = (await first.post("/runs", json={"prompt": "first question"})).json()["run_id"]
            await finish(first, run_id)
            answer = await first.get(f"/runs/{run_id}/messages")
            # The next turn on another server of the fleet (the same one on the in-process bus).
            async with client(create_app(script.agent(), bus=there)) as second:
                body = {"prompt": "second question", "continue_from": run_id}
                next_id = (await second.post("/runs", json=body)).json()["run_id"]
                await finish(second, next_id)
                conversation = await second.get(f"/runs/{next_id}/messages")
                unknown = await second.post("/runs", json={"prompt": "x", "continue_from": "no-such-run"})
                both = await second.post(
                    "/runs", json={"prompt": "x", "continue_from": run_id, "message_history": answer.json()}
                )
    finally:
        await here.aclose()
        if there is not here:
            await there.aclose()
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    first_turn = ModelMessagesTypeAdapter.validate_python(answer.json())
    assert turns(first_turn) == [("user", "first question"), ("model", "an answer")]
    # The model saw the first turn before the new prompt; the new run's messages hold both turns.
    assert turns(script.messages[1]) == [
        ("user", "first question"),
        ("model", "an answer"),
        ("user", "second question"),
    ]
    both_turns = ModelMessagesTypeAdapter.validate_python(conversation.json())
    assert turns(both_turns) == [*turns(first_turn), ("user", "second question"), ("model", "an answer")]
    assert isinstance(both_turns[0], ModelRequest) and isinstance(both_turns[1], ModelResponse)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "run_not_found")
    assert (both.status_code, both.json()["error"]["field"]) == (422, "continue_from")


async def test_a_running_run_has_no_conversation_yet_and_a_failed_one_keeps_its_own() -> None:
    script = Script(["partial", " more"], paced=True, fail_with="the model broke")
    async with client(create_app(script.agent())) as http:
        run_id = (await http.post("/runs", json={"prompt": "q"})).json()["run_id"]
        await script.started.wait()
        running = await http.get(f"/runs/{run_id}/messages")
        follow_on = await http.post("/runs", json={"prompt": "x", "continue_from": run_id})
        script.allow(2)
        await finish(http, run_id)
        failed = await http.get(f"/runs/{run_id}/messages")
        missing = await http.get("/runs/no-such-run/messages")
    assert (running.status_code, running.json()["error"]["code"]) == (409, "no_conversation")
    assert running.json()["error"]["message"] == f"run {run_id!r} has no conversation yet: it is still running"
    assert follow_on.status_code == 409
    # A run that failed mid-answer keeps what it had, as the user saw it: the prompt and the partial answer.
    assert failed.status_code == 200
    assert turns(ModelMessagesTypeAdapter.validate_python(failed.json())) == [("user", "q"), ("model", "partial more")]
    assert missing.status_code == 404


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_the_next_turn_works_in_the_same_workspace_where_it_can(kind: str) -> None:
    """Here the second turn finds the first turn's files; on another server of the fleet it starts afresh."""
    here, there = await buses(kind)
    made: list[DeepAgentDeps] = []

    def deps() -> DeepAgentDeps:
        made.append(DeepAgentDeps())
        return made[-1]

    agent = create_deep_agent(demo_model(delay=0))
    try:
        async with client(create_app(agent, bus=here, deps=deps)) as first:
            run_id = (await first.post("/runs", json={"prompt": "Plan a picnic"})).json()["run_id"]
            await finish(first, run_id)
            second = first if kind == "memory" else None
            async with client(create_app(agent, bus=there, deps=deps)) as other:
                http = second or other
                turn = {"prompt": "Make it a barbecue", "continue_from": run_id}
                next_id = (await http.post("/runs", json=turn)).json()["run_id"]
                events = await finish(http, next_id)
    finally:
        await here.aclose()
        if there is not here:
            await there.aclose()
    assert events[-1]["data"]["status"] == "succeeded", events[-2:]
    files = [sorted(d.backend.files) for d in made]
    if kind == "memory":  # one workspace for both turns: both turns' notes are in it
        assert files == [["/workspace/notes-make-it-a-barbecue.md", "/workspace/notes-plan-a-picnic.md"]]
    else:  # the other server never had the first workspace
        assert files == [["/workspace/notes-plan-a-picnic.md"], ["/workspace/notes-make-it-a-barbecue.md"]]
