"""What model calls cost and what they answered: the response cache and the daily budget.

Two tables in Bosun's database, beside the inbox:

- `bosun_llm_cache`: a validated answer per content hash of (prompt version, model,
  inputs). The same question under the same prompt is never paid for twice; a new prompt
  version is a new key, so a prompt edit never serves stale answers.
- `bosun_llm_spend`: tokens, cost and calls per workflow per UTC day, across runs. A call
  first *reserves* its estimate with one conditional UPDATE (atomic on SQLite and
  Postgres alike: the row is locked by the update), so concurrent runs cannot overspend
  together; the actual usage is settled afterwards in one statement per batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import engine_for, insert_ignoring_duplicates

ledger_metadata = sa.MetaData()

llm_cache = sa.Table(
    "bosun_llm_cache",
    ledger_metadata,
    sa.Column("cache_key", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(100), nullable=False),
    sa.Column("prompt_version", sa.String(64), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("answer", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

llm_spend = sa.Table(
    "bosun_llm_spend",
    ledger_metadata,
    sa.Column("workflow", sa.String(100), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cost", sa.Float, nullable=False, server_default="0"),
    sa.Column("calls", sa.Integer, nullable=False, server_default="0"),
)


def cache_key(prompt_version: str, model: str, inputs) -> str:
    body = json.dumps([prompt_version, model, inputs], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Spend:
    tokens: int
    cost: float
    calls: int


def today() -> date:
    return clock.now().date()


class LLMLedger:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    # -- cache ------------------------------------------------------------------------

    def cached(self, keys: list[str]) -> dict[str, dict]:
        """The cached answers among `keys`, in one query."""
        if not keys:
            return {}
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                rows = conn.execute(
                    sa.select(llm_cache.c.cache_key, llm_cache.c.answer).where(
                        llm_cache.c.cache_key.in_(keys[i : i + 500])
                    )
                )
                out.update({k: a for k, a in rows})
        return out

    def remember(self, workflow: str, rows: list[dict]) -> None:
        """rows: cache_key, prompt_version, model, answer. First answer wins on a race."""
        if not rows:
            return
        now = clock.now()
        with self.engine.begin() as conn:
            conn.execute(
                insert_ignoring_duplicates(self.engine, llm_cache, ["cache_key"]),
                [{**r, "workflow": workflow, "created_at": now} for r in rows],
            )

    # -- budget -----------------------------------------------------------------------

    def reserve(
        self,
        workflow: str,
        tokens: int,
        cost: float,
        max_tokens: int | None,
        max_cost: float | None,
        day: date | None = None,
    ) -> bool:
        """Add one call's estimate to today's spend if it stays within both limits."""
        day = day or today()
        with self.engine.begin() as conn:
            conn.execute(
                insert_ignoring_duplicates(self.engine, llm_spend, ["workflow", "day"]),
                [{"workflow": workflow, "day": day, "tokens": 0, "cost": 0.0, "calls": 0}],
            )
            cond = [llm_spend.c.workflow == workflow, llm_spend.c.day == day]
            if max_tokens is not None:
                cond.append(llm_spend.c.tokens + tokens <= max_tokens)
            if max_cost is not None:
                cond.append(llm_spend.c.cost + cost <= max_cost)
            res = conn.execute(
                llm_spend.update()
                .where(*cond)
                .values(tokens=llm_spend.c.tokens + tokens, cost=llm_spend.c.cost + cost, calls=llm_spend.c.calls + 1)
            )
            return res.rowcount == 1

    def settle(self, workflow: str, token_delta: int, cost_delta: float, day: date | None = None) -> None:
        """Replace the estimates by what the calls actually used (one statement per batch)."""
        if not token_delta and not cost_delta:
            return
        day = day or today()
        with self.engine.begin() as conn:
            conn.execute(
                llm_spend.update()
                .where(llm_spend.c.workflow == workflow, llm_spend.c.day == day)
                .values(tokens=llm_spend.c.tokens + token_delta, cost=llm_spend.c.cost + cost_delta)
            )

    def spend(self, workflow: str, day: date | None = None) -> Spend:
        day = day or today()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(llm_spend.c.tokens, llm_spend.c.cost, llm_spend.c.calls).where(
                    llm_spend.c.workflow == workflow, llm_spend.c.day == day
                )
            ).first()
        return Spend(int(row[0]), float(row[1]), int(row[2])) if row else Spend(0, 0.0, 0)
