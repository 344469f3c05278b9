"""A small TTL cache keyed by the content of a query, with hit and miss counts.

For lookups that are expensive and repeat (policy retrieval, embeddings): the key is a
hash of what was asked, so the same question is answered once per TTL whoever asks it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable


def content_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class TTLCache:
    def __init__(self, ttl_s: float = 3600.0, max_items: int = 50_000, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.max_items, self._clock = ttl_s, max_items, clock
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_many(self, keys: Iterable[Hashable], compute: Callable[[list], list]) -> list:
        """Values for `keys`; the missing ones computed in one call to `compute(missing_keys)`."""
        keys = list(keys)
        now = self._clock()
        out: dict = {}
        missing: list = []
        with self._lock:
            for k in keys:
                hit = self._data.get(k)
                if hit is not None and hit[0] > now:
                    out[k] = hit[1]
                    self._data.move_to_end(k)
                    self.hits += 1
                elif k not in out and k not in missing:
                    missing.append(k)
                    self.misses += 1
                else:
                    self.hits += 1  # asked twice in one call: computed once
        if missing:
            values = compute(missing)
            with self._lock:
                for k, v in zip(missing, values):
                    self._data[k] = (now + self.ttl_s, v)
                    out[k] = v
                while len(self._data) > self.max_items:
                    self._data.popitem(last=False)
        return [out[k] for k in keys]

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": round(self.hits / total, 4) if total else None}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0
