"""Input guards that run before any model sees free text: PII redaction, injection detection.

Pattern-based on purpose: they must run on every event in a batch in microseconds and
need no model. What they find is counted and recorded, never the matched text itself.
"""

from __future__ import annotations

import base64
import codecs
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

_PII_PATTERNS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "card": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    "phone": re.compile(r"(?<!\w)\+?\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
}

# Named families of instruction-like text. Free text on an invoice is written by the
# vendor: it has no business addressing the AI, naming roles, or telling anyone to approve.
_FAMILIES = {
    "instruction": (
        r"\b(ignore|disregard|forget|override|bypass|skip)\b.{0,40}\b(instructions?|rules?|guidelines?|polic(y|ies)|"
        r"checks?|everything|above|previous|prior|told)\b",
        r"\b(set|change)\s+(the\s+)?(decision|status|approval|confidence)\b",
        r"\bapprove (this|the|it)\b.{0,30}\b(immediately|now|without|regardless)\b",
        r"\b(auto-?approve|pre-?approved|must approve|always (say )?approve)\b",
        r"\b(ai|assistant|model|bot|llm|gpt|reviewer|automated system)\b.{0,60}\bapprov",
        r"\bdo not (hold|reject|escalate)\b",
        r"\b(important |new )?instructions? (for|to) (the )?(ai|assistant|model|automated|system)\b",
        r"\bnew (instructions?|task)\b|\byour (new )?task is\b",
        r"\brespond only with\b|\boutput\s*[{\[]",
    ),
    "role_marker": (
        r"(^|[\s>.\]])(system|assistant|developer)\s*:",
        r"</?\s*(system|assistant|user|invoice|instructions?)\s*>",
        r"\[/?inst\]|<\|im_(start|end)\|>|###\s*(instruction|response|system)",
    ),
    "role_play": (
        r"\b(you are now|act as|acting as|pretend (you are|to be)|role-?\s?play|let'?s play|from now on you|"
        r"admin mode|developer mode|jailbreak|dan mode)\b",
    ),
    "output_format": (
        r"[\"']?decision[\"']?\s*[:=]\s*[\"']?(approve|hold|reject)",
        r"\bconfidence\s*(to|=|:)\s*1(\.0)?\b",
    ),
    "foreign_instruction": (
        r"\b(ignorier\w*|anweisung\w*|genehmig\w*|freigeben|ohne (weitere )?pr[üu]fung)\b",
        r"\b(ignorez|ignore[rz]?\s+les|instructions? pr[ée]c[ée]dentes?|approuve\w*|sans v[ée]rification|"
        r"valider le paiement)\b",
        r"\b(ignora\w*|instrucciones|aprueb\w*|aprobar|istruzioni|approva\w*|negeer\w*|instructies|keur\b.{0,40}\bgoed|"
        r"instru[çc][õo]es|aprove\w*|zignoruj|instrukcj\w*|zatwierd\w*)\b",
        r"忽略|指令|批准|無視|指示|承認|игнорир\w*|инструкци\w*|одобр\w*",
    ),
}
_INJECTION_PATTERNS = [(family, re.compile(p, re.IGNORECASE | re.MULTILINE))
                       for family, patterns in _FAMILIES.items() for p in patterns]
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)
_SPACED = re.compile(r"\b(?:\w ){5,}\w\b")
_LEET = str.maketrans("013457@$", "oieastas")


def _families(text: str) -> set[str]:
    return {family for family, p in _INJECTION_PATTERNS if p.search(text)}


def _decoded(text: str) -> list[str]:
    """What the text says once common encodings are undone."""
    out = []
    for blob in _B64.findall(text):
        try:
            out.append(base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False).decode("utf-8", "strict"))
        except (ValueError, UnicodeDecodeError):
            pass
    for blob in _HEX.findall(text):
        try:
            out.append(bytes.fromhex(blob).decode("utf-8", "strict"))
        except (ValueError, UnicodeDecodeError):
            pass
    if "%" in text:
        out.append(urllib.parse.unquote(text))
    out.append(codecs.decode(text, "rot13"))
    return out


def _deobfuscated(text: str) -> list[str]:
    """The text with disguises removed: full-width letters, zero-width characters,
    s p a c e d letters, l33t digits."""
    plain = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    despaced = _SPACED.sub(lambda m: m.group(0).replace(" ", ""), re.sub(r" {2,}", "  ", plain))
    despaced = re.sub(r"(?<=\w)  (?=\w)", " ", despaced)
    return [plain, despaced, plain.translate(_LEET)]


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
    """Families of instruction-like content found, each once; "encoded_instruction" and
    "obfuscated_instruction" when it only shows after decoding or undisguising."""
    signals = set(_families(text))
    if not signals:
        if any(_families(d) for d in _decoded(text)):
            signals.add("encoded_instruction")
        elif any(_families(d) for d in _deobfuscated(text) if d != text):
            signals.add("obfuscated_instruction")
    return sorted(signals)


def guard_text(text: str) -> GuardedText:
    if not text:
        return GuardedText(text="")
    signals = injection_signals(text)
    redacted, pii = redact_pii(text)
    if signals:
        # Quarantined: the model never sees instruction-like text, only that there was some.
        redacted = "[QUARANTINED: free text contained instruction-like content]"
    return GuardedText(text=redacted, pii_found=pii, injection_suspected=bool(signals), injection_signals=signals)
