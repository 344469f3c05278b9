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


@dataclass
class LLMResult(Generic[T]):
    value: Optional[T]
    no_result_reason: Optional[str]
    attempts: int
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0


class ChatModel(dg.ConfigurableResource):
    @property
    def enabled(self) -> bool:
        return False

    def complete(self, messages: list[dict], output_model: type[T]) -> LLMResult[T]:
        raise NotImplementedError


class DisabledChatModel(ChatModel):
    """No LLM configured (no OPENAI_API_KEY / OPENAI_BASE_URL): the local model decides."""

    def complete(self, messages: list[dict], output_model: type[T]) -> LLMResult[T]:
        return LLMResult(None, "no LLM configured", 0, "none")
