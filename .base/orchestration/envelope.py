"""The event envelope every trigger speaks, and the registry of payload models.

A payload model is registered per (event type, schema version); the envelope is only
accepted when its payload validates against the registered model, so downstream code
never sees a payload it does not understand.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError


class EventEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, max_length=200)
    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=200)
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    entity_key: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        return f"{self.source}:{self.id}"


class PayloadRegistry:
    """Maps (type, schema_version) to the pydantic model its payload must satisfy."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[BaseModel]] = {}

    def register(self, event_type: str, version: int, model: type[BaseModel]) -> None:
        self._models[(event_type, version)] = model

    def model_for(self, event_type: str, version: int) -> type[BaseModel] | None:
        return self._models.get((event_type, version))

    @property
    def known(self) -> list[tuple[str, int]]:
        return sorted(self._models)


class RejectedInput(Exception):
    """Input that cannot become an event; `reason` names the offending field."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _describe(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        parts.append(f"{loc or '<root>'}: {e['msg']}")
    return "; ".join(parts)


def parse_envelope(raw: Any, registry: PayloadRegistry) -> EventEnvelope:
    """Validate an envelope and its payload; raise RejectedInput with a readable reason."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RejectedInput(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(raw, dict):
        raise RejectedInput(f"an event must be a JSON object, got {type(raw).__name__}")
    try:
        env = EventEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise RejectedInput(_describe(exc)) from None
    model = registry.model_for(env.type, env.schema_version)
    if model is None:
        raise RejectedInput(
            f"type: unknown event type/version {env.type!r} v{env.schema_version}; "
            f"known: {', '.join(f'{t} v{v}' for t, v in registry.known) or 'none'}"
        )
    try:
        payload = model.model_validate(env.payload)
    except ValidationError as exc:
        raise RejectedInput(_describe(exc, "payload")) from None
    return env.model_copy(update={"payload": payload.model_dump(mode="json")})


def raw_fingerprint(raw: Any) -> str:
    """Stable key for input that has no usable (source, id), so a rejection is stored once."""
    text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)
    return "raw:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def utc_iso(dt: datetime) -> str:
    return dt.isoformat()
