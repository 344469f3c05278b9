"""The ticket workflow's target systems, as SQL tables in BOSUN_TICKETS_DATABASE_URL (default:
Bosun's database): the CRM it reads customers from and the helpdesk whose tickets it assigns and
prioritises. Each effect is also a `RowTarget` row (idempotent by key, compensated by switching
it off), so reconciliation and "no ticket assigned twice" read one table."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa

from orchestration.action.actions import ActionType
from orchestration.action.row_target import RowTarget
from orchestration.verification.delayed_outcomes import DelayedOutcomes
from resources.target_database import TargetDatabase

meta = sa.MetaData()
customers = sa.Table(
    "crm_customers",
    meta,
    sa.Column("customer_id", sa.String(50), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(200), nullable=False),
    sa.Column("tier", sa.String(20), nullable=False),
    sa.Column("vip", sa.Boolean, nullable=False),
    sa.Column("contract", sa.String(20), nullable=False),
    sa.Column("open_invoices", sa.Integer, nullable=False),
)
tickets = sa.Table(
    "helpdesk_tickets",
    meta,
    sa.Column("ticket_id", sa.String(50), primary_key=True),
    sa.Column("customer_id", sa.String(50), nullable=False, index=True),
    sa.Column("subject", sa.String(500), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("team", sa.String(50)),
    sa.Column("priority", sa.String(20), nullable=False),
    sa.Column("reopened_at", sa.String(40)),  # the customer reopened it (the delayed outcome)
)
EFFECTS = RowTarget("helpdesk_effects")


class TicketSystems(TargetDatabase):
    """`url` unset means BOSUN_TICKETS_DATABASE_URL (the workflow's declaration), else Bosun's database."""

    @property
    def engine(self) -> sa.Engine:
        return self.engine_for(meta)

    def customers(self, ids: Optional[list[str]] = None) -> dict[str, dict]:
        q = sa.select(customers) if ids is None else sa.select(customers).where(customers.c.customer_id.in_(ids))
        with self.engine.connect() as c:
            return {r.customer_id: dict(r._mapping) for r in c.execute(q)}

    def tickets_of(self, customer_ids: list[str]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        with self.engine.connect() as c:
            for r in c.execute(sa.select(tickets).where(tickets.c.customer_id.in_(customer_ids))).mappings():
                out.setdefault(r["customer_id"], []).append(dict(r))
        return out

    def reopened(self, days: float) -> DelayedOutcomes:
        """Tickets the workflow assigned that their customer reopened within `days` (the delayed outcome)."""
        t, e = tickets.c, EFFECTS.table.c
        q = sa.select(e.key, t.ticket_id, t.created_at, t.reopened_at).join(EFFECTS.table, e.entity == t.ticket_id)
        with self.engine.connect() as c:
            rows = c.execute(q.where(e.live, e.step == "assign")).all()
        age = lambda r: (datetime.fromisoformat(r.reopened_at) - datetime.fromisoformat(r.created_at)).days  # noqa: E731
        late = [r for r in rows if r.reopened_at and age(r) < days]
        return DelayedOutcomes([{"subject": r.key.split(":", 1)[1], "entity": r.ticket_id} for r in late], len(rows))

    def set_field(self, field: str, values: dict[str, Optional[str]]) -> None:
        with self.engine.begin() as c:
            for ticket_id, value in values.items():
                c.execute(tickets.update().where(tickets.c.ticket_id == ticket_id).values({field: value}))

    def action(self, step: str, field: str, value_key: str, undo_key: Optional[str]) -> ActionType:
        """`step` writes the ticket's `field` from the saga's `value_key` (and its effect row);
        its compensation writes back `undo_key` (None: clears it) and switches the row off."""
        return EFFECTS.action(
            step,
            self.resolved_url,
            lambda it: it["ticket_id"],
            write=lambda items: self.set_field(field, {it["ticket_id"]: it[value_key] for it in items}),
            unwrite=lambda items: self.set_field(field, {it["ticket_id"]: it.get(undo_key or "") for it in items}),
            target="helpdesk",
        )
