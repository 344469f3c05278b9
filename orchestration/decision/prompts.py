"""Versioned prompts: a prompt is a file under version control, its hash is its version.

A prompt file (YAML) holds the template, the names of the inputs it takes and the JSON
schema of the answer. The version recorded on every decision is the file's content hash,
so editing the wording or the schema is a new version without any code change, and the
response cache (keyed by version) never serves an answer given to another prompt.

The answer's pydantic model is built from the schema in the file, so the schema the LLM
is given and the one its answer is validated against cannot drift apart. Only the JSON
schema features an answer needs are supported (flat objects of strings with enums and
length limits, numbers with bounds, booleans, nullable types); anything else is an
error when the prompt is loaded, not when a model answers.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    template: str
    inputs: tuple[str, ...]
    output_schema: dict
    output_model: type[BaseModel]

    def render(self, **values: str) -> str:
        missing = set(self.inputs) - set(values)
        if missing:
            raise KeyError(f"prompt {self.name} needs inputs {sorted(missing)}")
        return self.template.format(**{k: values[k] for k in self.inputs})


def load_prompt(path: str | Path) -> Prompt:
    # Read every time (a small file), parsed once per content: the version can never lag an edit.
    return _parse(str(path), Path(path).read_bytes())


def prompt_versions(path: str | Path) -> dict[str, Prompt]:
    """Every version of the prompt at `path` in its folder (the live file and candidates such
    as `NAME.cautious.yaml`: the files holding a prompt of the same name), by version and by
    file name, for `bosun replay`."""
    live = load_prompt(path)
    out: dict[str, Prompt] = {}
    for candidate in sorted(Path(path).parent.glob("*.yaml")):
        prompt = load_prompt(candidate)
        if prompt.name == live.name:
            out[prompt.version] = out[candidate.name.removesuffix(".yaml")] = prompt
    return out


@lru_cache(maxsize=32)
def _parse(path: str, raw: bytes) -> Prompt:
    doc = yaml.safe_load(raw)
    if not isinstance(doc, dict) or not {"name", "template", "inputs", "output_schema"} <= set(doc):
        raise ValueError(f"{path}: a prompt file needs name, template, inputs and output_schema")
    template, inputs = doc["template"], tuple(doc["inputs"])
    placeholders = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    if placeholders != set(inputs):
        raise ValueError(f"{path}: template placeholders {sorted(placeholders)} != declared inputs {sorted(inputs)}")
    version = f"{doc['name']}-{hashlib.sha256(raw).hexdigest()[:12]}"
    model = model_from_schema(doc["output_schema"])
    return Prompt(doc["name"], version, template, inputs, doc["output_schema"], model)


_SCALARS = {"string": str, "number": float, "integer": int, "boolean": bool}
_STRING_KEYS = {"minLength": "min_length", "maxLength": "max_length"}
_NUMBER_KEYS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt"}
_IGNORED = {"description", "title", "type", "enum"}


def model_from_schema(schema: dict) -> type[BaseModel]:
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise ValueError("output_schema must be an object with properties")
    required = set(schema.get("required", schema["properties"]))
    fields: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        annotation, constraints = _field(name, prop)
        default = ... if name in required else None
        if name not in required:
            annotation = Optional[annotation]
        fields[name] = (annotation, Field(default, description=prop.get("description"), **constraints))
    model = create_model(schema.get("title", "Answer"), __config__=ConfigDict(extra="forbid"), **fields)
    return model


def _field(name: str, prop: dict) -> tuple[Any, dict]:
    types = prop.get("type")
    nullable = isinstance(types, list) and "null" in types
    if isinstance(types, list):
        types = [t for t in types if t != "null"]
        if len(types) != 1:
            raise ValueError(f"output_schema.{name}: exactly one non-null type is supported")
        types = types[0]
    if types not in _SCALARS:
        raise ValueError(f"output_schema.{name}: type {types!r} is not supported")
    allowed = _STRING_KEYS if types == "string" else _NUMBER_KEYS if types in ("number", "integer") else {}
    unknown = set(prop) - _IGNORED - set(allowed)
    if unknown:
        raise ValueError(f"output_schema.{name}: unsupported keywords {sorted(unknown)}")
    annotation: Any = _SCALARS[types]
    if "enum" in prop:
        annotation = Literal[tuple(prop["enum"])]
    if nullable:
        annotation = Optional[annotation]
    return annotation, {allowed[k]: v for k, v in prop.items() if k in allowed}
