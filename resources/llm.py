"""Structured answers from an OpenAI-compatible chat endpoint.

`complete` never raises for anything the model or the network does: a caller gets either
a validated pydantic object or an explicit "no result" with a short reason, so a workflow
can escalate to a person instead of acting on a guess. Programming errors (a bad output
model, no API key configured) still raise.

Reliability is split in two layers:
- HTTP: the openai client's own retries (429/5xx/connection errors, honouring
  Retry-After) bounded by `max_http_retries`, and `timeout_s` per call so a hung server
  is cut off.
- Content: the reply is parsed only with `output_model.model_validate_json`; on a
  validation error the model is shown its reply and the errors and asked again, up to
  `max_attempts` calls in all.

The API key is never put in a reason, a log line or the resource's repr.
"""

from __future__ import annotations

import time
from typing import Any, Optional, TypeVar

import dagster as dg
import openai
from pydantic import BaseModel, PrivateAttr, ValidationError

from resources.chat_model import ChatModel, LLMResult
from resources.env import HidesApiKey, resolved

T = TypeVar("T", bound=BaseModel)

_MAX_ERRORS_SHOWN = 10
_MAX_REASON_CHARS = 500


class OpenAIStructuredLLM(HidesApiKey, ChatModel):
    """Callers pass `api_key=dg.EnvVar("OPENAI_API_KEY")` so the key stays out of config."""

    api_key: str
    base_url: Optional[str] = None
    model: str = "gpt-4o-mini"
    timeout_s: float = 20.0
    max_http_retries: int = 2
    max_attempts: int = 3
    # False sends {"type": "json_object"}, for compatible servers without json_schema
    # support; validation and re-asks still apply, the schema is then only in the prompt.
    structured_output: bool = True

    _client: Optional[openai.OpenAI] = PrivateAttr(default=None)

    @property
    def enabled(self) -> bool:
        return True

    @property
    def model_name(self) -> str:
        # Outside a run (CLI, benchmarks, tests) an EnvVar field is still the variable's
        # name, not its value: sending it as the model (or base URL) would be wrong.
        return resolved(self.model)

    # -- client ----------------------------------------------------------------------

    def _resolved_api_key(self) -> str:
        key: Any = self.api_key
        # Outside a run (tests, scripts) the field can still be the unresolved EnvVar.
        if isinstance(key, dg.EnvVar):
            key = key.get_value()
        if not key:
            raise ValueError("OpenAIStructuredLLM has no API key (is OPENAI_API_KEY set?)")
        return key

    def _get_client(self) -> openai.OpenAI:
        # Lazy so the resource also works when called outside a Dagster run; one client
        # per instance so its connection pool is reused across calls.
        if self._client is None:
            self._client = openai.OpenAI(
                api_key=self._resolved_api_key(),
                base_url=resolved(self.base_url),
                timeout=self.timeout_s,
                max_retries=self.max_http_retries,
            )
        return self._client

    # No teardown_after_execution closing the client on purpose: Dagster then refuses
    # process_config_and_initialize() for this resource. The pool is closed when the
    # per-run resource copy is garbage collected.

    # -- completion ------------------------------------------------------------------

    def response_format(self, output_model: type[BaseModel]) -> dict:
        if not self.structured_output:
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {
                "name": output_model.__name__,
                "schema": strict_json_schema(output_model),
                "strict": True,
            },
        }

    def complete(self, messages: list[dict], output_model: type[T]) -> LLMResult[T]:
        client = self._get_client()
        conversation = list(messages)  # re-asks extend a copy, never the caller's list
        response_format = self.response_format(output_model)
        started = time.perf_counter()
        attempts = input_tokens = output_tokens = 0
        last_errors = ""

        def result(value: Optional[T], reason: Optional[str], unavailable: bool = False) -> LLMResult[T]:
            return LLMResult(
                unavailable=unavailable,
                value=value,
                no_result_reason=self._scrub(reason) if reason else None,
                attempts=attempts,
                model=self.model_name,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                latency_s=time.perf_counter() - started,
            )

        while attempts < self.max_attempts:
            attempts += 1
            try:
                response = client.chat.completions.create(
                    model=self.model_name, messages=conversation, response_format=response_format
                )
            except openai.OpenAIError as err:
                return result(None, _http_failure_reason(err, self.timeout_s), unavailable=True)

            usage = getattr(response, "usage", None)
            if usage is not None:
                input_tokens += usage.prompt_tokens or 0
                output_tokens += usage.completion_tokens or 0

            choice = response.choices[0] if response.choices else None
            message = choice.message if choice is not None else None
            content = message.content if message is not None else None
            refusal = getattr(message, "refusal", None) if message is not None else None

            if refusal or content is None:
                finish = choice.finish_reason if choice is not None else "no choices"
                last_errors = f"refused: {refusal}" if refusal else f"empty reply (finish_reason={finish})"
                conversation.append({"role": "assistant", "content": refusal or "(empty reply)"})
                conversation.append({"role": "user", "content": _reask_text(output_model, last_errors)})
                continue

            try:
                return result(output_model.model_validate_json(content), None)
            except ValidationError as err:
                last_errors = _compact_errors(err)
                conversation.append({"role": "assistant", "content": content})
                conversation.append({"role": "user", "content": _reask_text(output_model, last_errors)})

        return result(None, f"invalid output after {attempts} attempts: {last_errors}")

    def _scrub(self, text: str) -> str:
        # Belt and braces: reasons are built from exception classes and status codes, but
        # a server could echo the key back in a refusal, which ends up in a reason.
        try:
            key = self._resolved_api_key()
        except ValueError:
            key = ""
        if key and key in text:
            text = text.replace(key, "**********")
        return text[:_MAX_REASON_CHARS]


def _http_failure_reason(err: openai.OpenAIError, timeout_s: float) -> str:
    # Only the class and status: response bodies can be large and may quote the request.
    if isinstance(err, openai.AuthenticationError):
        return "authentication failed"
    if isinstance(err, openai.APITimeoutError):
        return f"APITimeoutError: no response within {timeout_s}s"
    if isinstance(err, openai.APIStatusError):
        return f"{type(err).__name__}: HTTP {err.status_code}"
    return type(err).__name__


def _compact_errors(err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False, include_input=False)[:_MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in item.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {item.get('msg', '')}")
    more = err.error_count() - _MAX_ERRORS_SHOWN
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def _reask_text(output_model: type[BaseModel], errors: str) -> str:
    return (
        f"Your previous reply was not a valid {output_model.__name__} JSON object. "
        f"Validation errors: {errors}. "
        "Reply again with only a JSON object that matches the schema and fixes these errors."
    )


def strict_json_schema(output_model: type[BaseModel]) -> dict:
    """The model's JSON schema adjusted for OpenAI strict mode.

    Strict mode wants every object closed (additionalProperties false) with all its
    properties required, and rejects "default". Fields with defaults therefore become
    required in the schema sent; the model still validates the reply as declared.
    Nested models are referenced through $defs, which strict mode accepts.
    """
    return _strictify(output_model.model_json_schema())


def _strictify(node: Any) -> Any:
    if isinstance(node, list):
        return [_strictify(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            # Keys here are field/definition names, not schema keywords.
            out[key] = {name: _strictify(sub) for name, sub in value.items()}
        elif key == "default":
            continue
        else:
            out[key] = _strictify(value)
    if out.get("type") == "object" and isinstance(out.get("properties"), dict):
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out
