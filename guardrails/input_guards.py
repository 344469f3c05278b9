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
from functools import lru_cache
from typing import Iterable

from guardrails import pii

# Named families of instruction-like text. Free text on an invoice is written by the
# vendor: it has no business addressing the AI, naming roles, or telling anyone to approve.
# Each pattern wants an instruction's shape (an override verb *and* what it overrides, an
# approval *and* "without checks"), not a single word: accounts-payable notes say "disregard
# the previous invoice", "pre-approved by purchasing", "Source system: SAP" and "Freigeben
# nach Wareneingang" every day (tests/guardrails/corpora/harmless_notes.txt).
_TARGETS = (
    r"(instructions?|rules?|guidelines?|polic(y|ies)|checks?|controls?|prompts?|directives?|"
    r"restrictions?|safeguards?|guardrails?|guidance|everything|anything|all of (the|that)|what you were told)"
)
_FAMILIES = {
    "instruction": (
        rf"\b(ignore|disregard|forget|override|bypass|skip|circumvent|suspend)\b.{{0,40}}\b{_TARGETS}(?!\w)",
        r"\boverride\s*:",
        r"\b(ignore|disregard|forget)\s+(all\s+|everything\s+)?(the\s+|of\s+the\s+)?(above|previous|prior|earlier)"
        r"(\s+(text|message|content|context|input|lines?))?\s*(and|,|;|\.)\s*(just\s+)?(approve|pay|release|mark|say)",
        r"\b(set|change|mark|update)\s+(the\s+|your\s+|its\s+)?(decision|status|approval|confidence|verdict)\s*"
        r"(to|=|as|:)\s*[\"']?(approved?|paid|released?|1(\.0)?|100\s?%)",
        r"\bset\s+(the\s+)?(decision|confidence)\b",
        r"\bapprove (this|the|it)\b.{0,30}\b(immediately|right now|now|without|regardless)\b",
        r"\b(approve|pay|release|authori[sz]e)\b.{0,40}\b(without (any |further |additional |more )*(checks?|checking|"
        r"review|verification|approval|questions?)|regardless)\b",
        r"\b(auto-?approve|must approve|always (say )?approve)\b",
        r"\b(ai|a\.i\.|assistant|llm|gpt|chatbot|language model|ai model|automated (system|reviewer|approver)|"
        r"ai reviewer)\b.{0,60}\bapprov",
        r"\bdo not (hold|reject|escalate|flag)\b",
        r"\b(important |new )?instructions? (for|to) (the )?(ai|assistant|model|automated|system|bot)\b",
        r"\bnew instructions?\s*[:-]|\byour (new )?task is\b|\bnew task\s*:",
        r"\brespond only with\b|\boutput\s*[{\[]",
    ),
    "role_marker": (
        # A role marker with something for the model after it: "System: Oracle Fusion" and
        # "Assistant: Petra Vogel" are how AP notes name systems and people.
        r"((^|[>\]\)\"'.!?]\s*)(system|assistant|developer)|(?-i:\bSYSTEM))\s*:.{0,80}\b(approv\w*|verified|ignore|"
        r"you|set|decision|pay|payment|release|override|instructions?|mode|confirm\w*|genehmig\w*|output)\b",
        r"</?\s*(system|assistant|user|invoice|instructions?)\s*>",
        r"\[/?inst\]|<\|im_(start|end)\|>|###\s*(instruction|response|system)",
    ),
    "role_play": (
        r"\b(you are now|you're now|from now on,? you|pretend (you are|to be)|role-?\s?play (as|a game|with)|let'?s play|"
        r"admin mode|developer mode|god mode|jailbreak|dan mode)\b",
        r"(^|[.!?:;]\s*|\byou\s+|\bplease\s+|\bnow\s+)act as\b(?!\s+(agreed|discussed|usual|before|per\b|such|"
        r"follows|our|your|agent|intermediary))",
    ),
    "output_format": (
        r"[\"']?decision[\"']?\s*[:=]\s*[\"']?(approve|hold|reject)",
        r"\bconfidence\s*(to|=|:)\s*1(\.0)?\b",
    ),
    # The same shapes in the languages vendors write in: an override verb with what it overrides,
    # an approval without checks, the AI addressed, an approval demanded at once.
    "foreign_instruction": (
        r"\b(ignorier\w*|vergiss|vergessen sie|missacht\w*|übergeh\w*|umgeh\w*)\b.{0,40}\b(anweisung\w*|regel\w*|"
        r"richtlinie\w*|vorgabe\w*|prüfung\w*|kontrolle\w*|alles)",
        r"\bohne (weitere |jede |zusätzliche )?(prüfung|kontrolle)\b.{0,40}\b(freigeb\w*|genehmig\w*|bezahl\w*|"
        r"überweis\w*)|\b(freigeb\w*|genehmig\w*|bezahl\w*|überweis\w*)\b.{0,40}\bohne (weitere |jede )?"
        r"(prüfung|kontrolle)",
        r"\b(genehmig\w*|freigeb\w*)\b.{0,30}\b(sofort|umgehend|unverzüglich)\b|\b(sofort|umgehend)\b.{0,20}"
        r"\b(genehmig\w*|freigeb\w*)",
        r"\b(ki|assistent\w*|sprachmodell|ki-system)\b.{0,60}\b(genehmig|freigeb|freigabe)",
        r"\b(ignore[zr]?|oublie[zr]?)\b.{0,40}\b(instructions?|r[èe]gles?|consignes?|v[ée]rifications?)",
        r"\bsans (aucune |autre )?(v[ée]rification|contr[ôo]le)",
        r"\b(approuve\w*|valide[rz]?)\b.{0,30}\b(imm[ée]diatement|tout de suite)",
        r"\b(ignora\w*|olvida\w*)\b.{0,40}\b(instrucciones|reglas|normas|verificaciones|controles)",
        r"\bsin (ninguna |m[áa]s )?(verificaci[óo]n|revisi[óo]n|comprobaci[óo]n|control)",
        r"\b(aprueb\w*|aprob\w*)\b.{0,30}\b(inmediatamente|ahora mismo|ya)\b",
        r"\b(ignora\w*|dimentica\w*)\b.{0,40}\b(istruzioni|regole|controlli|verifiche)",
        r"\bsenza (alcun |ulteriori? )?(controll[oi]|verific[ah]e?)",
        r"\bapprova\w*\b.{0,30}\b(immediatamente|subito)",
        r"\b(negeer\w*|vergeet)\b.{0,40}\b(instructies|regels|controles)",
        r"\bzonder (verdere |enige )?(controle|verificatie)",
        r"\b(ignor[ae]\w*|esque[çc]a\w*)\b.{0,40}\b(instru[çc][õo]es|regras|verifica[çc][õo]es)",
        r"\bsem (qualquer |mais )?(verifica[çc][ãa]o|controle)",
        r"\b(zignoruj\w*|zapomnij)\b.{0,40}\b(instrukcj\w*|zasad\w*|regu[łl]\w*|polece[ńn]\w*)",
        r"\bbez (żadnej |dalszej )?(weryfikacji|kontroli)",
        r"(игнорир\w*|забудь\w*).{0,40}(инструкци\w*|правил\w*)|без (какой-либо )?проверки",
        r"(忽略|無視|忘记|忘記).{0,12}(指令|指示|规则|規則|说明|說明|ルール)|(指令|指示|规则|ルール).{0,12}(忽略|無視)",
        r"(无需|無需|不要|跳过|跳過)(审核|審核|检查|檢查)|直接批准|審査なしで|確認せずに",
    ),
}
_INJECTION_PATTERNS = [
    (family, re.compile(p, re.IGNORECASE | re.MULTILINE)) for family, patterns in _FAMILIES.items() for p in patterns
]
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)
_SPACED = re.compile(r"\b(?:\w ){2,}\w\b")
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
    text: str  # what a model may see
    pii_found: list[str] = field(default_factory=list)
    injection_suspected: bool = False
    injection_signals: list[str] = field(default_factory=list)


def redact_pii(text: str) -> tuple[str, list[str]]:
    """The text with personal data replaced by typed placeholders, and the kinds found
    (checked detectors: `guardrails/pii.py`)."""
    return pii.redact(text)


# Decoded and undisguised variants are only searched when they contain a word an instruction
# needs: rot13 of an ordinary note is gibberish, and searching every family in it doubled the cost.
_INSTRUCTION_WORDS = re.compile(
    r"approv|ignor|disregard|forget|bypass|overrid|skip|instruct|system|assistant|developer|decision|confiden|"
    r"role|pretend|act as|mode|jailbreak|inst\]|im_|respond|output|task|release|without|regardless|do not|"
    r"genehmig|freigeb|anweisung|regel|vergiss|ohne|approuv|valid|oubli|r[èe]gle|sans|aprueb|aprob|olvid|sin |"
    r"istruz|dimentic|senza|negeer|vergeet|zonder|aprov|esque|sem |zignoruj|zapomnij|zatwierd|bez |игнор|забуд|"
    r"инструкц|правил|одобр|провер|忽略|無視|指令|指示|批准|承認|审核|審核|確認|ルール",
    re.IGNORECASE,
)


def _families_if_worded(text: str) -> set[str]:
    return _families(text) if _INSTRUCTION_WORDS.search(text) else set()


def injection_signals(text: str) -> list[str]:
    """Families of instruction-like content found, each once; "encoded_instruction" and
    "obfuscated_instruction" when it only shows after decoding or undisguising."""
    signals = set(_families(text))
    if not signals:
        if any(_families_if_worded(d) for d in _decoded(text)):
            signals.add("encoded_instruction")
        elif any(_families_if_worded(d) for d in _deobfuscated(text) if d != text):
            signals.add("obfuscated_instruction")
    return sorted(signals)


QUARANTINED = "[QUARANTINED: free text contained instruction-like content]"


@lru_cache(maxsize=16_384)
def _guarded(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    # Cached by content: line items repeat catalogue texts, and a batch's notes repeat too.
    signals = injection_signals(text)
    redacted, kinds = redact_pii(text)
    if signals:
        # Quarantined: the model never sees instruction-like text, only that there was some.
        redacted = QUARANTINED
    return redacted, tuple(kinds), tuple(signals)


def guard_text(text: str) -> GuardedText:
    if not text:
        return GuardedText(text="")
    redacted, kinds, signals = _guarded(text)
    return GuardedText(
        text=redacted, pii_found=list(kinds), injection_suspected=bool(signals), injection_signals=list(signals)
    )


@dataclass
class GuardedForModels:
    """Free text guarded for the models that read it, with names a system of record knows."""

    text: str  # what a language model may read: PII redacted, instructions quarantined
    classifier_text: str  # what a classifier reads: PII redacted, instructions kept (it cannot be instructed)
    pii_found: list[str]
    injection_signals: list[str]


def guard_with_names(text: str, own_name: str = "", known_names: Iterable[str] = ()) -> GuardedForModels:
    """`guard_text`, with the names a CRM knows redacted too (person names are only found
    otherwise with the `pii-ner` extra): the writer's own as [CUSTOMER] (no model needs it to
    answer), anyone else's as [PERSON]."""
    text = text.replace(own_name, "[CUSTOMER]") if own_name else text
    for name in known_names:
        if name and name in text:
            text = text.replace(name, "[PERSON]")
    g = guard_text(text)
    classifier = redact_pii(text)[0] if g.injection_suspected else g.text
    kinds = sorted(set(g.pii_found) | ({"person"} if "[PERSON]" in text else set()))
    return GuardedForModels(g.text, classifier, kinds, g.injection_signals)
