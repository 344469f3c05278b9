"""Input guards that run before any model sees free text: PII redaction, injection detection.

Pattern-based on purpose: they must run on every event in a batch in microseconds and
need no model. What they find is counted and recorded, never the matched text itself.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

_PII_PATTERNS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "card": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    "phone": re.compile(r"(?<!\w)\+?\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
}

_INJECTION_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\bignore\b.{0,40}\b(instructions|rules|polic(y|ies)|above|previous)\b",
        r"\bdisregard\b.{0,40}\b(instructions|rules|polic(y|ies))\b",
        r"^\s*(system|assistant|developer)\s*:",
        r"</?\s*(system|assistant|invoice|instructions?)\s*>",
        r"\b(you are now|act as|admin mode|developer mode|jailbreak)\b",
        r"\b(set|change)\s+(the\s+)?(decision|status|approval)\b",
        r"\bapprove (this|the) (invoice|payment) (immediately|now|without)\b",
    )
]
_B64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


@dataclass
class GuardedText:
    text: str                      # what a model may see
    pii_found: list[str] = field(default_factory=list)
    injection_suspected: bool = False
    injection_signals: list[str] = field(default_factory=list)


def redact_pii(text: str) -> tuple[str, list[str]]:
    found: list[str] = []
    for kind, pattern in _PII_PATTERNS.items():
        text, n = pattern.subn(f"[{kind.upper()}]", text)
        if n:
            found.append(kind)
    return text, found


def injection_signals(text: str) -> list[str]:
    signals = [f"pattern:{i}" for i, p in enumerate(_INJECTION_PATTERNS) if p.search(text)]
    for blob in _B64.findall(text):
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False).decode("utf-8", "strict")
        except (ValueError, UnicodeDecodeError):
            continue
        if any(p.search(decoded) for p in _INJECTION_PATTERNS):
            signals.append("encoded_instruction")
    return signals


def guard_text(text: str) -> GuardedText:
    if not text:
        return GuardedText(text="")
    signals = injection_signals(text)
    redacted, pii = redact_pii(text)
    if signals:
        # Quarantined: the model never sees instruction-like text, only that there was some.
        redacted = "[QUARANTINED: free text contained instruction-like content]"
    return GuardedText(text=redacted, pii_found=pii, injection_suspected=bool(signals), injection_signals=signals)
