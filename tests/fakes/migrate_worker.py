"""One process bringing Bosun's schema in a database to its head; the test starts two at once.

    python migrate_worker.py DB_URL

Imports everything, prints READY, waits for a line on stdin (so two processes start their
upgrade together), upgrades, and prints {"before": [...], "after": [...]} as JSON.
"""

from __future__ import annotations

import json
import sys

from orchestration.core import db, schema_migrations


def main(url: str) -> None:
    engine = db.unmigrated_engine(url)
    schema_migrations.head(schema_migrations.BOSUN_SCHEMA)  # Alembic imported, revisions read
    print("READY", flush=True)
    sys.stdin.readline()
    before, after = schema_migrations.upgrade(engine, schema_migrations.BOSUN_SCHEMA)
    print(json.dumps({"before": list(before), "after": list(after)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
