"""The small interface every chat model resource offers, and its embedded stand-in.

`complete(messages, output_model)` returns an LLMResult whose `value` is a validated
pydantic object or None (an explicit "no result" with its reason); it never raises for
a bad answer or an unreachable endpoint, so a decision can always fall back or escalate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

import dagster as dg
from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    value: Optional[T]  # None is an explicit "no result"; no_result_reason says why
    no_result_reason: Optional[str]
    attempts: int  # model calls made, re-asks and a final failed HTTP call included
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    # The endpoint failed (HTTP error, timeout) rather than answering badly: a router may
    # stop calling it for a while, where a bad answer is only this question's problem.
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return self.value is not None


class ChatModel(dg.ConfigurableResource):
    @property
    def enabled(self) -> bool:
        return False

    def complete(self, messages: list[dict], output_model: type[T]) -> LLMResult[T]:
        raise NotImplementedError


class DisabledChatModel(ChatModel):
    """No LLM configured (no OPENAI_API_KEY / OPENAI_BASE_URL): the local model decides."""

    def complete(self, messages: list[dict], output_model: type[T]) -> LLMResult[T]:
        return LLMResult(None, "no LLM configured", 0, "none", unavailable=True)
