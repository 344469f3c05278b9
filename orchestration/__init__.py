"""Bosun's engine and entry points.

Dagster's warnings about features Bosun uses knowingly are handled here, once: every
module that defines Dagster objects imports `orchestration` first, so these filters are
in place before any definition is built (and `bosun dev` passes the same list to the
`dagster dev` processes it starts, see `DAGSTER_WARNINGS_TO_IGNORE`).
"""

import warnings

DAGSTER_WARNINGS_TO_IGNORE = (
    # Partition-aware asset checks are "preview" in Dagster 1.13; a batch check has to know its batch.
    "Specifying a partitions_def on an AssetCheckSpec",
    # The policy index's data version is the hash of its documents; Output(data_version=...) is "beta".
    "Parameter `data_version`",
    # `dagster dev` recommends `dg dev` (dagster-dg-cli), which Bosun does not ship; both read the same files.
    "Function `dev_command` is superseded",
)

for _message in DAGSTER_WARNINGS_TO_IGNORE:
    warnings.filterwarnings("ignore", message=_message)
