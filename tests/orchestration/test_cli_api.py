"""`bosun apikey`: a key is shown once and stored only as a hash."""

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

BOSUN = Path(sys.executable).parent / "bosun"


def test_apikey_create_prints_the_key_once_and_stores_its_hash(bosun_home):
    from orchestration.api.keys import ApiKeys
    from orchestration.core.db import api_keys
    from orchestration.core.settings import database_url

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    bad = subprocess.run(
        [str(BOSUN), "apikey", "create", "--name", "x", "--scopes", "events:write,everything"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "everything" in bad.stderr and bad.stdout == ""
    ok = subprocess.run(
        [str(BOSUN), "apikey", "create", "--name", "feeder", "--scopes", "events:write,events:read"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    created = json.loads(ok.stdout)
    secret = created["key"]
    keys = ApiKeys(database_url())
    found = keys.authenticate(secret)
    assert found and found.scopes == {"events:write", "events:read"} and not found.allows("admin")
    with keys.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(api_keys))]
    assert stored and not any(secret.split("_", 2)[2] in str(col) for row in stored for col in row)
    assert keys.revoke(created["key_id"]) and keys.authenticate(secret) is None
