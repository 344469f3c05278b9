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
