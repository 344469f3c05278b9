"""Untrusted text is declared in the payload model, and every declared field is guarded.

A workflow marks each free-text field written by someone outside (a vendor's memo, a line
item's description, a customer's message) with the annotated type `UntrustedText`:

    class LineItem(BaseModel):
        description: UntrustedText = Field(max_length=500)

`guard_payload(model, payload)` finds every such field, however deep (nested models, lists,
optional fields, dict values), and guards each one: personal data replaced by typed
placeholders, instruction-like text detected and quarantined. The guarded copy is what any
model reads and what the audit stores; the findings (field paths and kinds, never the text)
feed the workflow's facts (`injection_suspected`) and so its guardrail policy.

A field left undeclared is not guarded: `free_text_fields_left_undeclared(model)` lists the
plain `str` fields of a model so a test can keep a workflow's declaration complete.
"""

from __future__ import annotations

import collections.abc as abc
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel

from guardrails.input_guards import guard_text


@dataclass(frozen=True)
class Untrusted:
    """Marker in `Annotated[str, Untrusted()]`: text from outside, guarded before use."""


UntrustedText = Annotated[str, Untrusted()]

ANY = "*"  # a path step that means every item of a list (or value of a dict)
FieldPath = tuple[str, ...]


def _marked(metadata) -> bool:
    return any(isinstance(m, Untrusted) for m in metadata or ())


def _container(origin) -> str | None:
    """ "seq" for list-like generics, "map" for dict-like ones (their values), else None."""
    if not isinstance(origin, type) or origin in (str, bytes):
        return None
    if issubclass(origin, (abc.Sequence, abc.Set)):
        return "seq"
    if issubclass(origin, abc.Mapping):
        return "map"
    return None


def _item_types(tp) -> list:
    args = typing.get_args(tp)
    if _container(typing.get_origin(tp)) == "map":
        return list(args[1:2])
    return [a for a in args if a is not Ellipsis]


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _paths_in_type(tp, seen: frozenset) -> list[FieldPath]:
    """Paths below a value of type `tp` that hold untrusted text ((), for the value itself)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        return [()] if _marked(meta) else _paths_in_type(base, seen)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(name, *rest) for name, rest in _model_paths(tp, seen)]
    if _container(origin):
        return [(ANY, *p) for arg in _item_types(tp) for p in _paths_in_type(arg, seen)]
    if _is_union(tp):
        return [p for arg in typing.get_args(tp) for p in _paths_in_type(arg, seen)]
    return []


def _model_paths(model: type[BaseModel], seen: frozenset) -> list[tuple[str, FieldPath]]:
    if model in seen:
        return []  # a recursive model: its fields are already being walked
    seen = seen | {model}
    out = []
    for name, info in model.model_fields.items():
        # Paths name fields as `model_dump()` writes them (by name, not alias).
        if _marked(info.metadata):
            out.append((name, ()))
        else:
            out.extend((name, rest) for rest in _paths_in_type(info.annotation, seen))
    return out


@lru_cache(maxsize=256)
def untrusted_fields(model: type[BaseModel]) -> tuple[FieldPath, ...]:
    """Every path to untrusted text in the model, e.g. `("note",)`, `("line_items", "*", "description")`."""
    return tuple(sorted({(name, *rest) for name, rest in _model_paths(model, frozenset())}))


def free_text_fields_left_undeclared(model: type[BaseModel]) -> list[FieldPath]:
    """Plain `str` fields (no pattern, no choice of values) not declared untrusted: each is an
    identifier a workflow vouches for, or text someone forgot to guard. A workflow's test pins the list."""
    out: list[FieldPath] = []

    def walk(m: type[BaseModel], prefix: FieldPath, seen: frozenset) -> None:
        if m in seen:
            return
        for name, info in m.model_fields.items():
            if _marked(info.metadata):
                continue
            for tp, path in _leaves(info.annotation, (*prefix, name)):
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    walk(tp, path, seen | {m})
                elif tp is str and not any(getattr(x, "pattern", None) for x in info.metadata):
                    out.append(path)

    walk(model, (), frozenset())
    return out


def _leaves(tp, path: FieldPath):
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        if not _marked(meta):
            yield from _leaves(base, path)
    elif _container(origin):
        for arg in _item_types(tp):
            yield from _leaves(arg, (*path, ANY))
    elif _is_union(tp):
        for arg in typing.get_args(tp):
            yield from _leaves(arg, path)
    else:
        yield tp, path


@dataclass(frozen=True)
class FieldFinding:
    """What the guard found in one field: its path with list positions, e.g.
    `line_items[2].description`, the PII kinds and injection signals (never the text)."""

    field: str
    pii: tuple[str, ...] = ()
    injection_signals: tuple[str, ...] = ()

    @property
    def quarantined(self) -> bool:
        return bool(self.injection_signals)


@dataclass(frozen=True)
class GuardedPayload:
    payload: dict  # a copy: every untrusted field redacted or quarantined
    findings: tuple[FieldFinding, ...]  # one per field where something was found
    fields_guarded: int  # untrusted fields present in this payload

    @property
    def pii_found(self) -> list[str]:
        return sorted({k for f in self.findings for k in f.pii})

    @property
    def injection_suspected(self) -> bool:
        return any(f.quarantined for f in self.findings)

    @property
    def injection_signals(self) -> list[str]:
        return sorted({s for f in self.findings for s in f.injection_signals})

    @property
    def quarantined_fields(self) -> list[str]:
        return [f.field for f in self.findings if f.quarantined]

    def pii_in(self, field_prefix: str) -> list[str]:
        """PII kinds found in the fields under a path (`"note"`, `"line_items"`)."""
        return sorted({k for f in self.findings if f.field.split("[")[0].split(".")[0] == field_prefix for k in f.pii})

    def summary(self) -> dict:
        """For the audit and metadata: where what was found (field paths, kinds), no text."""
        return {
            "fields_guarded": self.fields_guarded,
            "pii": {f.field: list(f.pii) for f in self.findings if f.pii},
            "quarantined": {f.field: list(f.injection_signals) for f in self.findings if f.quarantined},
        }


def guard_payload(model: type[BaseModel], payload: dict[str, Any]) -> GuardedPayload:
    """Guard every untrusted field of `payload` (a dict as the model dumps it). The input is
    not changed; a missing or null field is skipped."""
    findings: list[FieldFinding] = []
    counter = [0]

    def guard(value, where: str):
        if not isinstance(value, str):
            return value
        counter[0] += 1
        g = guard_text(value)
        if g.pii_found or g.injection_suspected:
            findings.append(FieldFinding(where, tuple(g.pii_found), tuple(g.injection_signals)))
        return g.text

    def apply(node, path: FieldPath, where: str):
        if not path:
            return guard(node, where)
        step, rest = path[0], path[1:]
        if step == ANY:
            if isinstance(node, list):
                return [apply(v, rest, f"{where}[{i}]") for i, v in enumerate(node)]
            if isinstance(node, dict):
                return {k: apply(v, rest, f"{where}[{k}]") for k, v in node.items()}
            return node
        if not isinstance(node, dict) or node.get(step) is None:
            return node
        return {**node, step: apply(node[step], rest, f"{where}.{step}" if where else step)}

    guarded = payload
    for path in untrusted_fields(model):
        guarded = apply(guarded, path, "")
    return GuardedPayload(guarded, tuple(sorted(findings, key=lambda f: f.field)), counter[0])
