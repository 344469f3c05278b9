"""The HTTP review endpoints, thin over `orchestration/review/answers.py` (as `bosun review` is).

Reads need `reviews:read` or `reviews:write`; answers need `reviews:write`. The reviewer
recorded is the API key's name (and its key id as `via`), never anything from the body,
so a key cannot answer in someone else's name.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from orchestration.api.keys import ApiKey
from orchestration.review.answers import ReviewError, ReviewService


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")
    by: str
    label: str
    note: Optional[str] = None
    at: Optional[str] = None


class ReviewItem(BaseModel):
    id: int
    workflow: str
    kind: str
    event: str
    entity_key: Optional[str] = None
    batch_id: Optional[str] = None
    proposed: Optional[str] = None
    confidence: Optional[float] = None
    reason: str
    status: str
    created_at: Optional[str] = None
    answer: Optional[Answer] = None


class ReviewList(BaseModel):
    items: list[ReviewItem]


class ReviewDetail(ReviewItem):
    proposal: dict[str, Any]
    decision_record: Optional[dict[str, Any]] = None
    executes: list[dict[str, Any]] = Field(default_factory=list, description="the sagas approving runs, with steps")
    audit: list[dict[str, Any]]
    feedback: list[dict[str, Any]]


class ReviewAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")
    answer: str
    by: str
    label: str
    event: str
    review_id: Optional[int] = None


class ApproveBody(BaseModel):
    note: Optional[str] = Field(None, max_length=2000)


class RejectBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    label: Optional[str] = Field(None, max_length=50, description="the right decision (default: the workflow's)")


class CorrectionBody(BaseModel):
    label: str = Field(min_length=1, max_length=50)
    note: Optional[str] = Field(None, max_length=2000)


class Problem(BaseModel):
    detail: str


_STATUS = {"not_found": 404, "conflict": 409, "invalid": 422}
_REFUSALS = {
    404: {"model": Problem, "description": "no such review item or event"},
    422: {"description": "an invalid answer (unknown label, missing reason, nothing to approve)"},
}


def reviews_router(
    service: ReviewService, require: Callable[..., Callable], errors: dict, api_error: type[Exception]
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reviews"])
    read, write = require("reviews:read", "reviews:write"), require("reviews:write")

    async def call(fn, *args, **kwargs):
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except ReviewError as err:
            raise api_error(_STATUS[err.code], err.message)

    def via(key: ApiKey) -> str:
        return f"api:{key.key_id}"

    @router.get("/reviews", response_model=ReviewList, responses={422: _REFUSALS[422], **errors})
    async def list_reviews(
        status: Literal["pending", "approved", "rejected", "all"] = "pending",
        workflow: Optional[str] = Query(None, max_length=100),
        limit: int = Query(100, ge=1, le=1000),
        _key: ApiKey = Depends(read),
    ) -> ReviewList:
        """Review items, pending by default, oldest first."""
        return ReviewList(items=await call(service.list, status, workflow, limit))

    @router.get(
        "/reviews/{review_id}",
        response_model=ReviewDetail,
        responses={404: _REFUSALS[404], 422: _REFUSALS[422], **errors},
    )
    async def show_review(review_id: int = Path(ge=1, le=2**62), _key: ApiKey = Depends(read)) -> ReviewDetail:
        """One item with its event's full decision record, audit trail and feedback."""
        return ReviewDetail(**await call(service.show, review_id))

    @router.post(
        "/reviews/{review_id}/approve",
        response_model=ReviewAnswer,
        responses={409: {"model": Problem, "description": "already decided; nothing was done"}, **_REFUSALS, **errors},
    )
    async def approve_review(
        review_id: int = Path(ge=1, le=2**62), body: Optional[ApproveBody] = Body(None), key: ApiKey = Depends(write)
    ) -> ReviewAnswer:
        """Accept what Bosun proposed; a plan or payment it implies executes once."""
        return ReviewAnswer(**await call(service.approve, review_id, key.name, body.note if body else None, via(key)))

    @router.post(
        "/reviews/{review_id}/reject",
        response_model=ReviewAnswer,
        responses={409: {"model": Problem, "description": "already decided; nothing was done"}, **_REFUSALS, **errors},
    )
    async def reject_review(
        body: RejectBody, review_id: int = Path(ge=1, le=2**62), key: ApiKey = Depends(write)
    ) -> ReviewAnswer:
        """Refuse what Bosun proposed; nothing acts."""
        return ReviewAnswer(**await call(service.reject, review_id, key.name, body.reason, body.label, via(key)))

    @router.post(
        "/events/{source}/{event_id}/corrections",
        status_code=201,
        response_model=ReviewAnswer,
        responses={**_REFUSALS, **errors},
    )
    async def correct_event(
        source: str, event_id: str, body: CorrectionBody, key: ApiKey = Depends(write)
    ) -> ReviewAnswer:
        """The right label for an event's decision, past or pending: feedback only, acts on nothing."""
        return ReviewAnswer(
            **await call(service.correct, f"{source}:{event_id}", body.label, key.name, body.note, via(key))
        )

    return router
