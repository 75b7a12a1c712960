"""The JSON form of `StreamEvent`s: one Pydantic `TypeAdapter` over `AnyStreamEvent`, discriminated by type.

Encoding, decoding (with errors that name the field) and the published JSON Schema all come from it.
Built on first use, so importing the event model does not import Pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

from typing_extensions import TypedDict

from .types import AnyStreamEvent, StreamEvent, StreamEventType, payload_types

if TYPE_CHECKING:
    from pydantic import TypeAdapter, ValidationError

__all__ = ("Wire", "wire")


class Wire:
    """The JSON form of events: one Pydantic `TypeAdapter` over a union discriminated by `event_type`."""

    def __init__(self) -> None:
        from pydantic import AwareDatetime, Field, PlainSerializer, TypeAdapter

        timestamp = Annotated[
            AwareDatetime, PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json")
        ]
        self.encoders: dict[StreamEventType, TypeAdapter[Any]] = {}
        variants: list[Any] = []
        for event_type, payload in payload_types().items():
            fields: dict[str, Any] = {
                "event_type": Literal[event_type.value],  # type: ignore[valid-type]
                "data": payload,
                "timestamp": timestamp,
                "seq": Annotated[int, Field(ge=0)],
                "run_id": str,
                "agent_name": str | None,
                "parent_run_id": str | None,
                "parent_tool_call_id": str | None,
                "depth": Annotated[int, Field(ge=0)],
            }
            variant: Any = TypedDict(f"{event_type.value}_event", fields)  # type: ignore[misc]
            variants.append(variant)
            # Encoding picks the variant by the event's own type: cheaper than letting the union find it.
            self.encoders[event_type] = TypeAdapter[Any](variant)
        union: Any = Annotated[Union[tuple(variants)], Field(discriminator="event_type")]  # noqa: UP007
        self.adapter = TypeAdapter[Any](union)

    def encode(self, event: StreamEvent) -> str:
        wire = {
            "event_type": event.event_type.value,
            "data": event.data,
            "timestamp": event.timestamp,
            "seq": event.seq,
            "run_id": event.run_id,
            "agent_name": event.agent_name,
            "parent_run_id": event.parent_run_id,
            "parent_tool_call_id": event.parent_tool_call_id,
            "depth": event.depth,
        }
        encoder = self.encoders[event.event_type]
        try:
            return encoder.dump_json(wire, fallback=_json_fallback, warnings=False).decode()
        except ValueError:  # pydantic_core's PydanticSerializationError
            # Text that is not valid Unicode (a lone surrogate from a tool reading undecodable bytes, say):
            # send it with U+FFFD in its place rather than break every reader of the run.
            wire["data"] = _valid_text(event.data)
            return encoder.dump_json(wire, fallback=_json_fallback, warnings=False).decode()

    def decode_json(self, text: str | bytes) -> AnyStreamEvent:
        from pydantic import ValidationError

        try:
            value = self.adapter.validate_json(text)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None
        return _from_wire(value)

    def decode_python(self, value: Mapping[str, Any]) -> AnyStreamEvent:
        from pydantic import ValidationError

        try:
            wire = self.adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None
        return _from_wire(wire)

    def json_schema(self) -> dict[str, Any]:
        schema = self.adapter.json_schema(mode="serialization", ref_template="#/$defs/{model}")
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "StreamEvent",
            "description": "One event of a pydantic-deep stream, as `StreamEvent.to_json()` writes it.",
            **schema,
        }


def wire() -> Wire:
    """A new `Wire`; `types` keeps the one every event uses, built on the first encode or decode."""
    return Wire()


def _from_wire(value: dict[str, Any]) -> AnyStreamEvent:
    return cast(
        AnyStreamEvent,
        StreamEvent(
            event_type=StreamEventType(value["event_type"]),
            data=value["data"],
            timestamp=value["timestamp"],
            seq=value["seq"],
            run_id=value["run_id"],
            agent_name=value["agent_name"],
            parent_run_id=value["parent_run_id"],
            parent_tool_call_id=value["parent_tool_call_id"],
            depth=value["depth"],
        ),
    )


def _describe(exc: ValidationError) -> str:
    """Every problem, each with the field it is in: `not a StreamEvent: data.text: field required`."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] in _EVENT_TYPE_VALUES:
            loc = loc[1:]  # the union's tag, already said by the event type
        where = ".".join(loc)
        match error["type"]:
            case "json_invalid":
                problems.append(f"not JSON ({(error.get('ctx') or {}).get('error', error['msg'])})")
            case "model_type" | "dict_type" | "model_attributes_type" | "typed_dict_type":
                problems.append(f"expected a JSON object ({error['msg']})" if not where else f"{where}: not an object")
            case "union_tag_invalid":
                tag = (error.get("ctx") or {}).get("tag")
                problems.append(f"{tag!r} is not a valid event_type")
            case "union_tag_not_found":
                problems.append("missing or bad field 'event_type'")
            case "timezone_aware":
                problems.append(f"{where} must be timezone-aware")
            case _:
                problems.append(f"missing or bad field {where!r}: {error['msg']}")
    return "not a StreamEvent: " + "; ".join(problems)


_EVENT_TYPE_VALUES = frozenset(t.value for t in StreamEventType)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(value: Any) -> Any:
    """`value` with every string that cannot be encoded as UTF-8 repaired (U+FFFD for each lone surrogate)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {_valid_text(k): _valid_text(v) for k, v in cast("Mapping[Any, Any]", value).items()}
    if isinstance(value, list | tuple):
        return [_valid_text(item) for item in cast("list[Any]", value)]
    return value


def _json_fallback(value: object) -> object:
    """Make tool results and payload values JSON-safe without failing the stream."""
    from .._engine import jsonable

    return jsonable(value)
