"""Approval gating by amount, for any workflow whose actions move money: a saga whose amount is
above a limit waits for a person's approval (the executor's `approval` rule; review/queue.py)."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Callable


def limit_from_env(var: str) -> Decimal | None:
    """The limit from the environment variable `var`; None, nothing waits, when unset or empty."""
    raw = os.environ.get(var)
    return Decimal(raw) if raw else None


def amount_above(
    limit: Decimal | None, amount: str = "amount", currency: str = "currency"
) -> Callable[[dict], str | None]:
    """The rule: a saga's params whose `amount` is above `limit` -> why it waits; else None."""

    def rule(params: dict) -> str | None:
        value = Decimal(str(params[amount]))
        if limit is not None and value > limit:
            return f"amount {value} {params[currency]} above the approval limit {limit}"
        return None

    return rule
