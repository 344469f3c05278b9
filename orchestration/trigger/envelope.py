"""The event envelope every trigger speaks, and the registry of payload models.

A payload model is registered per (event type, schema version); the envelope is only
accepted when its payload validates against the registered model, so downstream code
never sees a payload it does not understand.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Callable

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


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class PayloadRegistry:
    """Maps (type, schema_version) to the pydantic model its payload must satisfy, and
    chains upcasters so every accepted payload reaches the type's current version.

    An envelope is validated against the model of the version it was sent with (so an
    error names that version's fields), then upcast one version at a time; the workflow
    only ever sees the current version."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[BaseModel]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, version: int, model: type[BaseModel]) -> None:
        self._models[(event_type, version)] = model

    def register_upcaster(self, event_type: str, from_version: int, upcast: Upcaster) -> None:
        """`upcast` turns a valid v`from_version` payload (a dict) into a v`from_version + 1` one."""
        self._upcasters[(event_type, from_version)] = upcast

    def model_for(self, event_type: str, version: int) -> type[BaseModel] | None:
        return self._models.get((event_type, version))

    def versions(self, event_type: str) -> list[int]:
        return sorted(v for t, v in self._models if t == event_type)

    def current_version(self, event_type: str) -> int | None:
        versions = self.versions(event_type)
        return versions[-1] if versions else None

    @property
    def known(self) -> list[tuple[str, int]]:
        return sorted(self._models)

    @property
    def types(self) -> list[str]:
        return sorted({t for t, _ in self._models})

    def check_complete(self) -> None:
        """Every registered version below the current one must have an upcaster."""
        for event_type in self.types:
            current = self.current_version(event_type)
            for v in self.versions(event_type):
                if v < current and (event_type, v) not in self._upcasters:
                    raise ValueError(f"{event_type} v{v} has no upcaster to v{v + 1}")

    def upcast(self, event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
        """Validate `payload` as `version`, then lift it to the current version; RejectedInput on failure."""
        current = self.current_version(event_type)
        while True:
            model = self._models[(event_type, version)]
            try:
                payload = model.model_validate(payload).model_dump(mode="json")
            except ValidationError as exc:
                raise RejectedInput(_describe(exc, "payload") + f" (as {event_type} v{version})") from None
            if version == current:
                return payload
            upcaster = self._upcasters.get((event_type, version))
            if upcaster is None or (event_type, version + 1) not in self._models:
                raise RejectedInput(
                    f"schema_version: {event_type} v{version} cannot be upcast to "
                    f"v{version + 1} (no upcaster registered)"
                )
            payload, version = upcaster(dict(payload)), version + 1


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
    versions = registry.versions(env.type)
    if not versions:
        raise RejectedInput(
            f"type: unknown event type {env.type!r}; known types: {', '.join(registry.types) or 'none'}"
        )
    if env.schema_version not in versions:
        raise RejectedInput(
            f"schema_version: {env.type!r} has no version {env.schema_version}; "
            f"known versions: {', '.join(str(v) for v in versions)}"
        )
    payload = registry.upcast(env.type, env.schema_version, env.payload)
    return env.model_copy(update={"payload": payload, "schema_version": versions[-1]})


def raw_fingerprint(raw: Any) -> str:
    """Stable key for input that has no usable (source, id), so a rejection is stored once."""
    text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)
    return "raw:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def utc_iso(dt: datetime) -> str:
    return dt.isoformat()
