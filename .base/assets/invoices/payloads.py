"""Payload models of the invoice workflow's events, registered per (type, version)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INVOICE_RECEIVED = "invoice.received"


class LineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(max_length=500)
    quantity: Decimal = Field(gt=0)
    unit_price: Decimal = Field(ge=0)


class InvoiceReceivedV1(BaseModel):
    """`invoice.received` v1. Amounts are decimal strings: floats would lose cents."""

    model_config = ConfigDict(extra="forbid")

    invoice_id: str = Field(min_length=1, max_length=100)
    vendor_id: str = Field(min_length=1, max_length=100)
    po_number: str = Field(min_length=1, max_length=100)
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    issued_on: date
    due_on: date
    line_items: list[LineItem] = Field(min_length=1, max_length=500)
    memo: str = Field(default="", max_length=4000)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_a_decimal_string(cls, v):
        if isinstance(v, float):
            raise ValueError("amount must be a decimal string such as '1250.00', not a float")
        return v


def register(registry) -> None:
    registry.register(INVOICE_RECEIVED, 1, InvoiceReceivedV1)
