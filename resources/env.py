"""Reading a resource field that may still be an unresolved EnvVar.

Inside a run Dagster resolves EnvVar fields to their values; a resource used outside a
run (the CLI, the sensor's helpers, tests) still holds the EnvVar itself.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg


def resolved(value: Optional[str]) -> Optional[str]:
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


class HidesApiKey:
    """Mixin for resources holding an API key: inside a run Dagster resolves the EnvVar,
    so the field then holds the key itself, which repr/str must never show."""

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield (name, "**********") if name == "api_key" else (name, value)
