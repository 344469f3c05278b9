"""The HTTP trigger: `POST /v1/events` into the inbox, `GET /v1/events/{source}/{id}` out,
and the review endpoints (api_reviews.py) when the entry point passes the review service.

Authenticated by API key (`Authorization: Bearer bsn_...`), scoped, rate-limited per key.
A batch is all-or-nothing: one invalid event and no event of the request is stored (the
rejection is, with its reason), and the answer is 422 naming every bad field. The server
only stores events; the sensor and its batch runs process them, and `wait=` lets a
caller wait (bounded) for the outcome instead of polling the status URL.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Optional, Union
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from orchestration.api.keys import ApiKey, ApiKeys, KeyRateLimits, retry_after_header
from orchestration.trigger.envelope import EventEnvelope, PayloadRegistry
from orchestration.trigger.inbox import TERMINAL_STATES, Inbox

if TYPE_CHECKING:
    from orchestration.review.answers import ReviewService


class EventStatus(BaseModel):
    source: str
    id: str
    status: str
    status_url: str
    reason: Optional[str] = None
    outcome: Optional[dict[str, Any]] = None
    duplicate_deliveries: int = 0
    retry_of: Optional[str] = None


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int
    complete: bool  # every event reached a terminal state before the answer
    events: list[EventStatus]


class Problem(BaseModel):
    detail: str


class FieldError(BaseModel):
    model_config = ConfigDict(extra="allow")
    loc: list[Union[str, int]]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    detail: list[FieldError]


class Health(BaseModel):
    status: str


class ApiError(Exception):
    def __init__(self, status: int, detail: Any, headers: dict | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


_ERRORS = {
    401: {"model": Problem, "description": "missing or unknown API key"},
    403: {"model": Problem, "description": "the key lacks the scope"},
    429: {"model": Problem, "description": "rate limit; see Retry-After"},
}


def _field_of(reason: str) -> list[str]:
    """`payload.amount: ...` -> ["payload", "amount"]; reasons that name no field -> []."""
    head = reason.split(":", 1)[0]
    return head.split(".") if head and " " not in head else []


def _status_url(source: str, event_id: str) -> str:
    return f"/v1/events/{quote(source, safe='')}/{quote(event_id, safe='')}"


def _as_status(key: str, row: dict | None) -> EventStatus:
    source, _, event_id = key.partition(":")
    if row is None:
        return EventStatus(source=source, id=event_id, status="unknown", status_url=_status_url(source, event_id))
    return EventStatus(
        source=row["source"],
        id=row["event_id"],
        status=row["status"],
        reason=row["reason"],
        outcome=row["outcome"],
        duplicate_deliveries=row["duplicate_count"],
        status_url=_status_url(row["source"], row["event_id"]),
        retry_of=row.get("retry_of"),
    )


def create_app(
    db_url: str,
    registry: PayloadRegistry,
    max_body_bytes: int = 1 << 20,
    max_batch: int = 1000,
    max_wait_s: float = 60.0,
    metrics: bool = True,
    reviews: "ReviewService | None" = None,
    console: bool = True,
) -> FastAPI:
    """`reviews` adds the review endpoints (api_reviews.py) and, with `console`, the reviewer
    console at /console (console.py); the entry point passes the service with the workflows'
    hooks. `metrics` serves GET /metrics for Prometheus."""
    inbox, keys, limits = Inbox(db_url), ApiKeys(db_url), KeyRateLimits(db_url)
    app = FastAPI(title="Bosun events API", version="1")
    bearer = HTTPBearer(auto_error=False, description="an API key from `bosun apikey create`")

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    def require(*scopes: str):
        """Any one of `scopes` admits the key."""

        async def dependency(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> ApiKey:
            key = await run_in_threadpool(keys.authenticate, creds.credentials) if creds else None
            if key is None:
                raise ApiError(
                    401, "a valid API key is required (Authorization: Bearer bsn_...)", {"WWW-Authenticate": "Bearer"}
                )
            if not any(key.allows(scope) for scope in scopes):
                raise ApiError(403, f"this key lacks the scope {' or '.join(repr(s) for s in scopes)}")
            wait = await run_in_threadpool(limits.take, key)
            if wait:
                raise ApiError(
                    429,
                    f"rate limit of {key.rate_per_s:g}/s (burst {key.burst}) exceeded",
                    {"Retry-After": retry_after_header(wait)},
                )
            return key

        return dependency

    envelope_schema = EventEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    envelope_schema.pop("$defs", None)
    body_schema = {
        "oneOf": [envelope_schema, {"type": "array", "items": envelope_schema, "minItems": 1, "maxItems": max_batch}]
    }

    @app.get("/v1/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=EventsAccepted,
        responses={
            200: {"model": EventsAccepted, "description": "every event reached a terminal state"},
            413: {"model": Problem, "description": f"body over {max_body_bytes} bytes"},
            422: {"model": ValidationProblem, "description": "invalid events; none was stored"},
            **_ERRORS,
        },
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
    )
    async def post_events(
        request: Request,
        wait: float = Query(0, ge=0, le=max_wait_s, description="seconds to wait for the outcome"),
        _key: ApiKey = Depends(require("events:write")),
    ):
        """Store one envelope or a list of them (all or nothing); 202 with a status URL per event."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise ApiError(413, f"request body over {max_body_bytes} bytes")
        body = await request.body()
        if len(body) > max_body_bytes:
            raise ApiError(413, f"request body over {max_body_bytes} bytes")
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(422, [{"loc": ["body"], "msg": f"not valid JSON: {exc}", "type": "json_invalid"}])
        items = raw if isinstance(raw, list) else [raw]
        if not items or len(items) > max_batch:
            raise ApiError(422, [{"loc": ["body"], "msg": f"send 1 to {max_batch} events", "type": "batch_size"}])
        summary = await run_in_threadpool(inbox.ingest, items, registry, True)
        if summary.rejected:
            raise ApiError(
                422,
                [
                    {"loc": ["body", r["line"] - 1, *_field_of(part)], "msg": part, "type": "rejected"}
                    for r in summary.rejected
                    for part in r["reason"].split("; ")
                ],
            )
        deadline = time.monotonic() + wait
        while True:
            rows = await run_in_threadpool(inbox.lookup, summary.keys)
            complete = all(r["status"] in TERMINAL_STATES for r in rows.values())
            if complete or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        result = EventsAccepted(
            accepted=summary.accepted,
            duplicates=summary.duplicates,
            complete=complete,
            events=[_as_status(k, rows.get(k)) for k in summary.keys],
        )
        return JSONResponse(result.model_dump(mode="json"), status_code=200 if complete else 202)

    @app.get(
        "/v1/events/{source}/{event_id}",
        response_model=EventStatus,
        responses={404: {"model": Problem, "description": "no such event"}, **_ERRORS},
    )
    async def get_event(source: str, event_id: str, _key: ApiKey = Depends(require("events:read"))) -> EventStatus:
        """An event's state; a dead letter that was retried answers with its latest retry."""
        key = f"{source}:{event_id}"
        row = (await run_in_threadpool(inbox.lookup, [key])).get(key)
        if row is None:
            raise ApiError(404, f"no event {event_id!r} from {source!r}")
        return _as_status(key, row)

    if metrics:
        _add_metrics_route(app, db_url)
    if reviews is not None:
        from orchestration.api.reviews import reviews_router

        app.include_router(reviews_router(reviews, require, _ERRORS, ApiError))
        if console:
            _add_console(app, reviews, keys, limits)
    return app


def _add_console(app: FastAPI, reviews: "ReviewService", keys: ApiKeys, limits: KeyRateLimits) -> None:
    """The reviewer console under /console, sharing the keys and their rate limits."""
    from fastapi.responses import RedirectResponse

    from orchestration.api.console import console_secret, create_console, secure_cookie

    app.mount("/console", create_console(reviews, keys, limits, console_secret(), https_only=secure_cookie()))

    @app.get("/", include_in_schema=False)
    async def to_console() -> RedirectResponse:
        return RedirectResponse("console/", status_code=303)


def _add_metrics_route(app: FastAPI, db_url: str) -> None:
    """GET /metrics for Prometheus, without an API key: scrapers send none by default, and
    the figures are counts (no payload, no personal data, no secret). Keep it off a public
    listener with `bosun serve --no-metrics` and scrape `bosun metrics --port` instead."""
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from orchestration.verification.prometheus import registry_for

    registry = registry_for(db_url)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
