"""What a model call costs: a price table per model per 1,000 tokens, from a YAML file.

The table is configuration, not code (`orchestration/decision/config/pricing.yaml`, or the file
named by BOSUN_PRICING_FILE), so a price change is a reviewed one-line edit.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PRICING_FILE = Path(__file__).parent / "config" / "pricing.yaml"


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_1k: float = Field(ge=0)
    output_per_1k: float = Field(ge=0)


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    currency: str = "USD"
    default: Price
    models: dict[str, Price] = {}

    def price(self, model: str) -> Price:
        return self.models.get(model, self.default)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        p = self.price(model)
        return round(input_tokens / 1000 * p.input_per_1k + output_tokens / 1000 * p.output_per_1k, 8)


def pricing_file() -> Path:
    return Path(os.environ.get("BOSUN_PRICING_FILE") or DEFAULT_PRICING_FILE)


@lru_cache(maxsize=4)
def _load(path: str, _mtime_ns: int) -> PriceTable:
    with open(path) as fh:
        return PriceTable.model_validate(yaml.safe_load(fh))


def price_table() -> PriceTable:
    path = pricing_file()
    return _load(str(path), path.stat().st_mtime_ns)
