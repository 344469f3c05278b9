"""API keys with scopes, stored hashed, and a token-bucket rate limit per key, shared by
every server process through the database (orchestration/action/rate_limit.py).

A key reads `bsn_<key_id>_<secret>`: the id finds the row, the secret is compared by
its SHA-256 in constant time. The plaintext is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
from dataclasses import dataclass

import sqlalchemy as sa

from orchestration.action.rate_limit import RateLimiter
from orchestration.core import clock
from orchestration.core.db import api_keys, engine_for

SCOPES = ("events:write", "events:read", "reviews:read", "reviews:write", "admin")  # admin implies every scope


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    rate_per_s: float
    burst: int

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _as_key(row) -> ApiKey:
    return ApiKey(row["key_id"], row["name"], frozenset(row["scopes"].split(",")), row["rate_per_s"], row["burst"])


class ApiKeys:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    def create(self, name: str, scopes: list[str], rate_per_s: float = 20.0, burst: int = 40) -> tuple[str, ApiKey]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    secret_sha256=_sha(secret),
                    scopes=",".join(sorted(set(scopes))),
                    rate_per_s=rate_per_s,
                    burst=burst,
                    created_at=clock.now(),
                )
            )
        return f"bsn_{key_id}_{secret}", ApiKey(key_id, name, frozenset(scopes), rate_per_s, burst)

    def authenticate(self, presented: str) -> ApiKey | None:
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != "bsn":
            return None
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(api_keys).where(api_keys.c.key_id == parts[1], api_keys.c.revoked_at.is_(None)))
                .mappings()
                .first()
            )
        if row is None or not hmac.compare_digest(row["secret_sha256"], _sha(parts[2])):
            return None
        return _as_key(row)

    def get(self, key_id: str) -> ApiKey | None:
        """A key by id, unless revoked: a console session re-reads its key on every request,
        so revoking the key (or changing its scopes) ends the session at once."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)))
                .mappings()
                .first()
            )
        return _as_key(row) if row is not None else None

    def list(self) -> list[dict]:
        cols = [c for c in api_keys.c if c.name != "secret_sha256"]
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(*cols).order_by(api_keys.c.created_at)).mappings()]

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=clock.now())
                ).rowcount
                == 1
            )


class KeyRateLimits:
    """One token bucket per key (`rate_per_s` a second, up to `burst`) in the database, so
    two server processes (or hosts) behind one balancer share a key's allowance instead of
    each granting it in full. A request is one conditional UPDATE of the key's row."""

    def __init__(self, url: str):
        self.url, self._lock = url, threading.Lock()
        self._limiters: dict[str, RateLimiter] = {}

    def take(self, key: ApiKey) -> float:
        """0 when allowed, else the seconds until the key may call again."""
        with self._lock:
            limiter = self._limiters.get(key.key_id)
            if limiter is None:
                # No headroom: the allowance is the key's, exactly (the saga limiter's headroom
                # is for a target that measures arrivals).
                limiter = RateLimiter(self.url, f"api_key:{key.key_id}", key.rate_per_s, key.burst, headroom=0.0)
                self._limiters[key.key_id] = limiter
        return limiter.try_acquire()


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
