"""Payload models of the invoice workflow's events, registered per (type, version).

The current version of `invoice.received` is 2; v1 payloads are accepted and upcast on
the way into the inbox, so the assets read v2 fields only.

Free text from outside is declared `UntrustedText`: the engine guards every such field
(`guardrails/untrusted.py`) before a model reads it or the audit stores it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guardrails.untrusted import UntrustedText

INVOICE_RECEIVED = "invoice.received"


class LineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Written by the vendor, like the memo: guarded (PII redacted, instructions quarantined).
    description: UntrustedText = Field(max_length=500)
    quantity: Decimal = Field(gt=0)
    unit_price: Decimal = Field(ge=0)


class _Invoice(BaseModel):
    """Fields every version of `invoice.received` has. Amounts are decimal strings: floats would lose cents."""

    model_config = ConfigDict(extra="forbid")

    invoice_id: str = Field(min_length=1, max_length=100)
    vendor_id: str = Field(min_length=1, max_length=100)
    po_number: str = Field(min_length=1, max_length=100)
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    issued_on: date
    due_on: date
    line_items: list[LineItem] = Field(min_length=1, max_length=500)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_a_decimal_string(cls, v):
        if isinstance(v, float):
            raise ValueError("amount must be a decimal string such as '1250.00', not a float")
        return v


class InvoiceReceivedV1(_Invoice):
    memo: UntrustedText = Field(default="", max_length=4000)


class InvoiceReceivedV2(_Invoice):
    """v2: `memo` is renamed `note` (free text from any channel, not just memos), and
    `channel` says how the invoice reached us; v1 senders did not say, hence the default."""

    note: UntrustedText = Field(default="", max_length=4000)
    channel: Literal["email", "portal", "edi", "paper", "unknown"] = "unknown"


def upcast_invoice_received_v1(payload: dict) -> dict:
    """v1 -> v2: `memo` becomes `note`; `channel` takes its default."""
    payload = dict(payload)
    payload["note"] = payload.pop("memo", "")
    return payload


def register(registry) -> None:
    registry.register(INVOICE_RECEIVED, 1, InvoiceReceivedV1)
    registry.register(INVOICE_RECEIVED, 2, InvoiceReceivedV2)
    registry.register_upcaster(INVOICE_RECEIVED, 1, upcast_invoice_received_v1)
    registry.check_complete()
