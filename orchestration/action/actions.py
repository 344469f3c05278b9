"""Action types: what a saga step does to a target system, and how it is undone and checked.

An action type declares do, compensate, verify, its idempotency key, a timeout, a retry
policy (exponential backoff with jitter, by tenacity; errors classed retryable or not)
and the target it calls, whose rate limit is shared by every run (rate_limit.py).
Every function takes many items per call: a batch costs a few round trips per step.
"""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy.exc
import tenacity

# do(items) -> {item key: error} for items the target refused (permanent, per item);
# raising means the call as a whole failed (classified by the retry policy).
DoFn = Callable[[list[dict]], dict[str, str]]
CompensateFn = Callable[[list[dict]], None]
# verify(items) -> the item keys whose effect is live at the target now.
VerifyFn = Callable[[list[dict]], set[str]]


class RetryableError(Exception):
    """A target's transient failure: the same call may succeed later."""


class PermanentError(Exception):
    """A target's refusal: retrying the same call cannot help."""


class StepTimeout(RetryableError, TimeoutError):
    """The call did not answer in time; its effect is in doubt until verified."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, (RetryableError, TimeoutError, ConnectionError)):
        return True
    # A dropped connection or a lock timeout at the target, not a bad statement.
    return isinstance(exc, sqlalchemy.exc.OperationalError)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_s: float = 0.05
    max_s: float = 2.0
    jitter_s: float = 0.05
    retryable: Callable[[BaseException], bool] = is_retryable

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential_jitter(multiplier=self.initial_s, max=self.max_s, jitter=self.jitter_s),
            retry=tenacity.retry_if_exception(self.retryable),
            reraise=True,
        )


@dataclass(frozen=True)
class ActionType:
    name: str
    do: DoFn
    compensate: CompensateFn
    verify: VerifyFn
    # saga id -> this action's idempotency key at the target; replays reuse it.
    key: Callable[[str], str] = None  # type: ignore[assignment]
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    target: str | None = None  # the system this action calls
    rate_limit: float | None = None  # calls/s the target accepts from every run together
    max_items_per_call: int = 500

    def __post_init__(self):
        if self.key is None:
            object.__setattr__(self, "key", lambda saga_id, _n=self.name: f"{_n}:{saga_id}")


_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _calls() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="bosun-action")
        return _pool


def call_with_timeout(fn: Callable, arg, timeout_s: float):
    """Run fn(arg), giving up after timeout_s. The call may still land later: the caller
    treats a timed-out step as in doubt and asks `verify`."""
    future = _calls().submit(fn, arg)
    try:
        return future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise StepTimeout(f"no answer within {timeout_s:g}s") from None


def verified_by_keys(live_keys: Callable[[list[str]], set[str]]) -> VerifyFn:
    """A `verify` from a target's read of which idempotency keys are in effect: the executor
    hands verify the items it handed `do`, whose key is the action's already."""
    return lambda items: live_keys([it["key"] for it in items])


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
