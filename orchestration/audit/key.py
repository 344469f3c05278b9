"""The audit chain's key: HMAC-SHA256 instead of plain SHA-256, so that rewriting a record
and recomputing every later hash needs the key, not just write access to the database.

The key comes from `BOSUN_AUDIT_KEY` (production: a secret the database's writers and
readers share, the database's administrators do not). Without it, an embedded default is
generated once into `BOSUN_HOME/audit.key` (mode 0600) with a warning: it makes the
embedded setup keyed, but whoever can read BOSUN_HOME can forge the chain.

The key itself is never logged, put in metadata or in the audit log: records carry only
its `key_id`, an HMAC of a fixed label under the key (names the key, reveals nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.core import settings

KEY_ENV = "BOSUN_AUDIT_KEY"
KEY_FILE = "audit.key"
MIN_KEY_BYTES = 16

log = logging.getLogger(__name__)
_warned: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class AuditKey:
    key_id: str
    source: str  # "env" or the key file's path (never the key)
    secret: bytes = field(repr=False)

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def key_from_secret(secret: str | bytes, source: str = "env") -> AuditKey:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"{KEY_ENV} must be at least {MIN_KEY_BYTES} bytes")
    key_id = hmac.new(raw, b"bosun-audit-key-id", hashlib.sha256).hexdigest()[:16]
    return AuditKey(key_id, source, raw)


def key_file() -> Path:
    return settings.bosun_home() / KEY_FILE


def _default_key() -> AuditKey:
    path = key_file()
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # O_EXCL: two processes starting at once create one key; the loser reads it.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
        if str(path) not in _warned:
            _warned.add(str(path))
            log.warning(
                "%s is not set: the audit chain is keyed with the embedded default key in %s; anyone "
                "who can read that file can forge the chain. Set %s from a secret store in production.",
                KEY_ENV,
                path,
                KEY_ENV,
            )
    secret = path.read_text().strip()
    return key_from_secret(secret, str(path))


def current_key(secret: str | None = None) -> AuditKey:
    """`secret` (a resource's resolved EnvVar), else BOSUN_AUDIT_KEY, else the embedded default."""
    secret = secret or os.environ.get(KEY_ENV)
    if secret:
        return key_from_secret(secret, "env")
    return _default_key()
