"""The reviewer console: server-rendered pages over the review service, mounted by `bosun
serve` at /console.

People who review escalations sign in with an API key that has a review scope; the reviewer
recorded with every answer is the key's name (as in the HTTP API), so a key per reviewer.
Answers go through `ReviewService` like `bosun review` and `POST /v1/reviews/...`: an item is
decided once and a second answer, from any session or channel, is refused.

Security, kept small: the session is a signed cookie (Starlette's SessionMiddleware,
itsdangerous) that is HttpOnly, SameSite=Strict, scoped to the console's path and Secure when
BOSUN_CONSOLE_SECURE_COOKIE=1; it holds the key's id and a CSRF token, never the key. Every
request re-reads the key, so revoking it ends its sessions at once. Every POST carries the
session's CSRF token; signing in starts a new token (no fixation). Pages send a CSP without
scripts, no-store caching and no framing. Nothing here names a workflow: what a proposal or
plan holds is rendered from the item's and decision record's own data.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from orchestration.api.keys import ApiKey, ApiKeys, KeyRateLimits
from orchestration.core import clock, settings
from orchestration.review.answers import STATUSES, ReviewError, ReviewService

HERE = Path(__file__).parent
READ_SCOPES = ("reviews:read", "reviews:write")
SESSION_MAX_AGE_S = 8 * 3600  # a working day; then sign in again
MAX_NOTE = 2000
MAX_LABEL = 50
_STATUS = {"not_found": 404, "conflict": 409, "invalid": 422}
_HEADERS = {
    # No script at all; styles from our own file; forms post only to us; never framed.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def console_secret() -> str:
    """BOSUN_CONSOLE_SECRET, else a random secret generated once in BOSUN_HOME (mode 0600) and
    shared by every `bosun serve` process on that home."""
    configured = os.environ.get("BOSUN_CONSOLE_SECRET")
    if configured:
        return configured
    path = settings.bosun_home() / "console_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".console_secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:  # link is atomic and refuses to replace: of two processes starting at once, one secret wins
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def secure_cookie() -> bool:
    """BOSUN_CONSOLE_SECURE_COOKIE=1: the session cookie only over HTTPS (behind the TLS proxy)."""
    return os.environ.get("BOSUN_CONSOLE_SECURE_COOKIE", "0").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Reviewer:
    key: ApiKey

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def can_answer(self) -> bool:
        return self.key.allows("reviews:write")


def may_review(key: ApiKey) -> bool:
    return any(key.allows(scope) for scope in READ_SCOPES)


# ---- presenting the data --------------------------------------------------------------------
def _parse(ts: Any) -> datetime | None:
    if isinstance(ts, datetime):
        return ts
    try:
        return datetime.fromisoformat(str(ts)) if ts else None
    except ValueError:
        return None


def age(seconds: float | None) -> str:
    """45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return "unknown"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age_since(ts: Any) -> str:
    when = _parse(ts)
    return age((clock.now() - when).total_seconds()) if when and when.tzinfo else "unknown"


def columns(rows: list) -> list[str]:
    """The keys of a list of mappings, in first-seen order (a table's header)."""
    out: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            out.update(dict.fromkeys(row))
    return list(out)


def record_view(record: dict | None) -> dict | None:
    """The decision record in the sections a reviewer reads: the event, the context (each
    source's age), the proposal with its confidence factors, the guardrail verdicts; what no
    section shows stays available as `other`."""
    if not record:
        return None
    context = record.get("context_used") or {}
    sources = [
        {"source": name, **(info if isinstance(info, dict) else {"status": info})}
        for name, info in sorted((context.get("sources") or {}).items())
    ]
    for src in sources:
        src["age"] = age(src.get("age_s")) if src.get("age_s") is not None else "unknown"
    guardrails = record.get("guardrails") or {}
    verdicts = [{"guardrail": g, "verdict": "blocked"} for g in guardrails.get("blocked_by") or []] + [
        {"guardrail": g, "verdict": "flagged"} for g in guardrails.get("flagged_by") or []
    ]
    shown = {
        "event",
        "context_used",
        "guardrails",
        "confidence",
        "confidence_breakdown",
        "probabilities",
        "proposed",
        "decision",
        "reason",
        "model",
        "model_version",
        "prompt_version",
        "route",
        "route_reason",
        "calibrator_version",
        "context_hash",
        "facts",
        "entity_key",
    }
    assembly = context.get("assembly") or {}
    return {
        "event": record.get("event") or {},
        "sources": sources,
        "quality_factors": context.get("quality_factors") or [],
        "conflicts": context.get("conflicts") or [],
        "gaps": (context.get("knowledge") or {}).get("gaps") or [],
        "kept": assembly.get("kept") or [],
        "dropped": assembly.get("dropped") or [],
        "assembly": {
            k: assembly.get(k) for k in ("tokens", "budget", "tokenizer", "within_budget", "hash") if k in assembly
        },
        "context_hash": record.get("context_hash"),
        "proposed": record.get("proposed"),
        "decision": record.get("decision"),
        "reason": record.get("reason"),
        "confidence": record.get("confidence"),
        "factors": record.get("confidence_breakdown") or [],
        "probabilities": record.get("probabilities") or {},
        "model": {
            k: record.get(k)
            for k in ("model", "model_version", "prompt_version", "route", "route_reason", "calibrator_version")
            if record.get(k) is not None
        },
        "facts": record.get("facts") or {},
        "guardrails": guardrails,
        "verdicts": verdicts,
        "other": {k: v for k, v in record.items() if k not in shown},
    }


_IN_SECTIONS = ("guardrails", "decision", "proposed")  # shown from the decision record
_SUMMARY_FIELDS = ("step", "status", "answer", "by", "decision", "label", "reason", "error")


def audit_summary(record: dict) -> str:
    """One line per audit record: the fields that say what happened, whichever it has."""
    return "; ".join(
        f"{k}: {record[k]}"
        for k in _SUMMARY_FIELDS
        if isinstance(record.get(k), (str, int, float)) and record.get(k) != ""
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates" / "console"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(age_since=age_since, columns=columns)
    env.tests["mapping_list"] = lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    return env


# ---- the app --------------------------------------------------------------------------------
def create_console(
    reviews: ReviewService,
    keys: ApiKeys,
    limits: KeyRateLimits,
    secret: str,
    https_only: bool = False,
    max_age_s: int = SESSION_MAX_AGE_S,
) -> FastAPI:
    """The console as an app of its own, for `app.mount("/console", ...)`: its session cookie
    and headers stay off the JSON API."""
    app = FastAPI(title="Bosun reviewer console", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(env=_environment())
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # Added after the header middleware, so it runs first (outermost) and the session is
    # there for everything inside.
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="bosun_console",
        max_age=max_age_s,
        path="/console",
        same_site="strict",
        https_only=https_only,
    )

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def csrf_token(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(32)
        return request.session["csrf"]

    def page(request: Request, name: str, context: dict, status: int = 200, reviewer: Reviewer | None = None):
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {"base": base(request), "csrf": csrf_token(request), "reviewer": reviewer, "flash": flash, **context},
            status_code=status,
        )

    def go(request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(base(request) + path, status_code=303)

    async def reviewer_of(request: Request) -> Reviewer | Response:
        """The signed-in reviewer, or the response to send instead (sign in, or 429)."""
        key_id = request.session.get("key_id")
        key = await run_in_threadpool(keys.get, key_id) if key_id else None
        if key is None or not may_review(key):
            request.session.pop("key_id", None)  # revoked, or its scopes were taken away
            return go(request, "/sign-in")
        wait = limits.take(key)
        if wait:
            return page(
                request,
                "error.html",
                {"title": "Too many requests", "message": f"Slow down: try again in {wait:.0f} s."},
                429,
            )
        return Reviewer(key)

    async def form_of(request: Request) -> dict[str, str] | Response:
        """The posted form, or a 403 page when its CSRF token is not this session's."""
        form = await request.form()
        sent = form.get("csrf")
        expected = request.session.get("csrf")
        if not (isinstance(sent, str) and expected and hmac.compare_digest(sent, expected)):
            return page(
                request,
                "error.html",
                {
                    "title": "Form expired",
                    "message": "This form was not sent from this session (or the session "
                    "ended). Reload the page and try again.",
                },
                403,
            )
        return {k: v.strip() for k, v in form.items() if isinstance(v, str)}

    @app.get("/", response_class=HTMLResponse, name="queue")
    async def queue(request: Request, status: str = "pending", workflow: str = "", limit: int = 500):
        who = await reviewer_of(request)
        if isinstance(who, Response):
            return who
        status = status if status in (*STATUSES, "all") else "pending"
        limit = min(max(limit, 1), 1000)
        items = await run_in_threadpool(reviews.list, status, workflow or None, limit)
        for item in items:
            item["age"] = age_since(item["created_at"])
        return page(
            request,
            "queue.html",
            {
                "title": "Review queue",
                "items": items,
                "status": status,
                "workflow": workflow,
                "statuses": (*STATUSES, "all"),
                "workflows": sorted(reviews.workflows),
                "limit": limit,
            },
            reviewer=who,
        )

    @app.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_page(request: Request):
        return page(request, "sign_in.html", {"title": "Sign in"})

    @app.post("/sign-in", response_class=HTMLResponse)
    async def sign_in(request: Request):
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        presented = form.get("api_key", "")
        key = await run_in_threadpool(keys.authenticate, presented) if presented else None
        if key is None:
            return page(request, "sign_in.html", {"title": "Sign in", "error": "That API key is not valid."}, 401)
        if not may_review(key):
            return page(
                request,
                "sign_in.html",
                {
                    "title": "Sign in",
                    "error": "This API key has no review scope (reviews:read or reviews:write); "
                    "ask an administrator for a reviewer's key.",
                },
                403,
            )
        # A new session: nothing of the signed-out one (its CSRF token included) carries over.
        request.session.clear()
        request.session.update(key_id=key.key_id, csrf=secrets.token_urlsafe(32), flash=f"Signed in as {key.name}.")
        return go(request, "/")

    @app.post("/sign-out")
    async def sign_out(request: Request):
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        request.session.clear()
        request.session["flash"] = "Signed out."
        return go(request, "/sign-in")

    async def item_page(
        request: Request, who: Reviewer, item_id: int, error: str | None = None, status: int = 200
    ) -> Response:
        try:
            item = await run_in_threadpool(reviews.show, item_id)
        except ReviewError as err:
            return page(
                request, "error.html", {"title": "Not found", "message": err.message}, _STATUS[err.code], reviewer=who
            )
        hooks = reviews.workflows.get(item["workflow"])
        return page(
            request,
            "item.html",
            {
                "title": f"Review {item_id}",
                "item": item,
                "age": age_since(item["created_at"]),
                "record": record_view(item["decision_record"]),
                # What the sections above and below do not show already: the workflow's own data.
                "proposal": {
                    k: v
                    for k, v in item["proposal"].items()
                    if k not in ("plan", "params") and not (item["decision_record"] and k in _IN_SECTIONS)
                },
                "audit": [{**r, "what": audit_summary(r["record"])} for r in item["audit"]],
                "labels": list(getattr(hooks, "LABELS", ())),
                "error": error,
            },
            status,
            reviewer=who,
        )

    @app.get("/reviews/{item_id}", response_class=HTMLResponse)
    async def show(request: Request, item_id: int):
        who = await reviewer_of(request)
        if isinstance(who, Response):
            return who
        return await item_page(request, who, item_id)

    @app.post("/reviews/{item_id}/{answer}", response_class=HTMLResponse)
    async def answer(request: Request, item_id: int, answer: str):
        who = await reviewer_of(request)
        if isinstance(who, Response):
            return who
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        if not who.can_answer:
            return await item_page(
                request, who, item_id, "Your key may read the queue but not answer (it lacks reviews:write).", 403
            )
        note, label = form.get("note") or None, form.get("label") or None
        if len(note or "") > MAX_NOTE or len(label or "") > MAX_LABEL:
            return await item_page(request, who, item_id, f"A note is at most {MAX_NOTE} characters.", 422)
        via = f"console:{who.key.key_id}"
        try:
            if answer == "approve":
                out = await run_in_threadpool(reviews.approve, item_id, who.name, note, via)
            elif answer == "reject":
                out = await run_in_threadpool(reviews.reject, item_id, who.name, note or "", label, via)
            elif answer == "correct":
                if not label:
                    raise ReviewError("invalid", "choose the right label")
                out = await run_in_threadpool(reviews.correct, item_id, label, who.name, note, via)
            else:
                return page(
                    request, "error.html", {"title": "Not found", "message": f"no answer {answer!r}"}, 404, reviewer=who
                )
        except ReviewError as err:
            return await item_page(request, who, item_id, err.message, _STATUS[err.code])
        request.session["flash"] = _answered(out)
        return go(request, f"/reviews/{item_id}")

    return app


def _answered(out: dict) -> str:
    """The flash line after an answer: what was recorded and what the approval executed."""
    text = f"{out['answer'].capitalize()} by {out['by']} as {out['label']!r}."
    sagas = out.get("sagas")
    if sagas:
        parts = [f"{len(sagas['done'])} saga(s) done"]
        if sagas["failed"]:
            parts.append("failed: " + "; ".join(f"{k}: {v}" for k, v in sagas["failed"].items()))
        if sagas["deferred"]:
            parts.append(f"{len(sagas['deferred'])} deferred (finished by `bosun saga recover`)")
        if sagas["in_doubt"]:
            parts.append(f"{len(sagas['in_doubt'])} in doubt")
        text += " Executed: " + ", ".join(parts) + "."
    return text
