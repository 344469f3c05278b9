"""Personal data in free text: found, checked, and replaced by typed placeholders.

A candidate is only redacted when it survives a check of what it claims to be, so the
numbers accounts payable lives on (dates, order and reference numbers, amounts, postal
codes, VAT ids) stay readable:

- IBAN: country code, check digits and the country's length (python-stdnum, mod 97), upper
  or lower case, with or without spaces;
- card: 13 to 19 digits with a card issuer's prefix and length, Luhn checksum (python-stdnum),
  not introduced as a reference or order number;
- phone: parsed and validated with its region (phonenumbers); a number written without an
  international prefix must also look like one (a trunk 0, a bracketed or NANP-grouped area
  code) or be introduced as one ("Tel.", "call", "Telefon", ...), so bare digit runs are not phones;
- email: the address, and its common obfuscations (`name(at)example.de`, `name [at] example [dot] com`);
- address: a street with a house number followed by a postal code and town (German, Dutch,
  French, English writing), built in;
- person names (and addresses written any other way) need a named-entity model: the optional
  extra `pii-ner` (Presidio with a spaCy model). Without it, names are NOT redacted, and
  `coverage()` says so.

Redaction replaces only the characters of a finding: `Call +49 30 901820 today` becomes
`Call [PHONE] today`, the whitespace around it is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn

PII_TYPES = ("iban", "card", "email", "phone", "address", "person")


@dataclass(frozen=True)
class PiiSpan:
    kind: str  # one of PII_TYPES
    start: int
    end: int


# ---- IBAN ---------------------------------------------------------------------------------
# Two letters, two check digits, then 11..30 letters/digits in groups separated by at most
# one space or dash. Validation picks the prefix whose length the country's format wants.
_IBAN_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")


def _find_ibans(text: str) -> list[PiiSpan]:
    out = []
    for m in _IBAN_CANDIDATE.finditer(text):
        raw = m.group(0)
        # positions (in `raw`) of each alphanumeric character, so a valid prefix maps back to a span
        positions = [i for i, ch in enumerate(raw) if ch.isalnum()]
        compact = "".join(raw[i] for i in positions).upper()
        for n in range(len(compact), 14, -1):
            end_in_raw = positions[n - 1] + 1
            if end_in_raw < len(raw) and raw[end_in_raw].isalnum():
                continue  # would cut a word in two
            if _iban.is_valid(compact[:n]):
                out.append(PiiSpan("iban", m.start(), m.start() + end_in_raw))
                break
    return out


# ---- card numbers ----------------------------------------------------------------------------
_CARD_CANDIDATE = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){12,18}(?![\w]|[.,]\d)")
# (issuer prefix, lengths): Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro
_CARD_BRANDS = (
    (re.compile(r"4"), (13, 16, 19)),
    (re.compile(r"5[1-5]|2(2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)"), (16,)),
    (re.compile(r"3[47]"), (15,)),
    (re.compile(r"6011|65|64[4-9]"), (16, 19)),
    (re.compile(r"35(2[89]|[3-8]\d)"), (16, 17, 18, 19)),
    (re.compile(r"3(0[0-5]|[689])"), (14, 16, 19)),
    (re.compile(r"62"), (16, 17, 18, 19)),
    (re.compile(r"5[06-8]|6\d"), (12, 13, 14, 15, 16, 17, 18, 19)),
)
# Words that introduce a reference rather than a card: a Luhn-valid order number stays readable.
_REFERENCE_CUE = re.compile(
    r"(?<![A-Za-z])(ref(erence|erenz|\.)?|rf\d\d|verwendungszweck|order|po|invoice|inv|no\.?|nr\.?|#|bestell\w*|auftrag\w*|rechnung\w*|beleg\w*|"
    r"kunden\w*|customer|account|konto\w*|tracking|sendung\w*|lieferschein\w*|delivery note|commande|facture|"
    r"pedido|factura|ordine|fattura|bestelling|factuur|zamówieni\w*|faktur\w*|contract|vertrag\w*|ticket|case|"
    r"batch|lot|serial|seriennummer|sn|id|ean|gtin|isbn|mandat\w*|mandate|aktenzeichen|az\.?)\W{0,3}$",
    re.IGNORECASE,
)
_CARD_CUE = re.compile(
    r"(card|karte|kreditkarte|visa|mastercard|amex|carte|tarjeta|carta|kaart|karta|cc)\b", re.IGNORECASE
)


def _is_card(digits: str) -> bool:
    if not 12 <= len(digits) <= 19 or not _luhn.is_valid(digits):
        return False
    return any(p.match(digits) and len(digits) in lengths for p, lengths in _CARD_BRANDS)


def _find_cards(text: str) -> list[PiiSpan]:
    out = []
    for m in _CARD_CANDIDATE.finditer(text):
        raw = m.group(0)
        seps = set(re.findall(r"[ -]", raw))
        if len(seps) > 1:
            continue  # "1234 5678-9012 ..." is no way anyone writes a card number
        if not _is_card(re.sub(r"\D", "", raw)):
            continue
        before = text[max(0, m.start() - 30) : m.start()]
        if _REFERENCE_CUE.search(before.rstrip()) and not _CARD_CUE.search(before):
            continue
        out.append(PiiSpan("card", m.start(), m.end()))
    return out


# ---- email ---------------------------------------------------------------------------------
_AT = r"(?:@|＠|\s?[\(\[\{<]\s?(?:at|ät|AT)\s?[\)\]\}>]\s?|\s(?:at|AT)\s)"
_DOT = r"(?:\.|\s?[\(\[\{<]\s?(?:dot|punkt|point|DOT)\s?[\)\]\}>]\s?|\s(?:dot|punkt|DOT)\s)"
_TLD = r"[A-Za-z]{2,24}"
_EMAIL = re.compile(
    rf"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*{_AT}[A-Za-z0-9-]+(?:{_DOT}[A-Za-z0-9-]+)*{_DOT}{_TLD}(?![\w@])"
)
# Plain " at " / " dot " (no brackets) reads as English prose too ("meet at noon. Then"):
# accepted only with a top-level domain people actually write.
_COMMON_TLDS = frozenset("com de org net eu fr nl at ch it es uk co io be pl se dk no fi pt ie lu cz info biz".split())


def _find_emails(text: str) -> list[PiiSpan]:
    out = []
    for m in _EMAIL.finditer(text):
        s = m.group(0)
        if "@" not in s and "＠" not in s and not re.search(r"[\(\[\{<]", s):
            tld = re.split(r"\.|\s", s)[-1].lower()
            if tld not in _COMMON_TLDS:
                continue
        out.append(PiiSpan("email", m.start(), m.end()))
    return out


# ---- phone ---------------------------------------------------------------------------------
# Regions tried for numbers written without an international prefix (the sample's vendors'
# countries); a number with + or 00 is parsed on its own.
DEFAULT_REGIONS = ("DE", "GB", "US", "FR", "NL", "AT", "CH", "IE", "IT", "ES", "PL", "BE")
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ()./-]{4,22}\d(?!\w|[.,]\d)")
_PHONE_CUE = re.compile(
    r"(?<![A-Za-z])(tel|phone|telephone|call|ring|fax|mobile|mob|cell|hotline|telefon\w*|rufnummer|handy|mobil|tél|téléphone|"
    r"portable|appel\w*|teléfono|telefono|llam\w*|chiama\w*|cellulare|telefoon|bel|gsm|zadzwoń|tel\.|☎|📞|"
    r"whatsapp|contact|kontakt|erreichbar)\b[^\d]{0,25}$",
    re.IGNORECASE,
)
_NANP_GROUPED = re.compile(r"^(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}$")
_TRUNK_GROUPED = re.compile(r"^\(?0\d{1,5}\)?(?:[ /-]\d{2,8})+$")
_DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")


def _find_phones(text: str, regions: tuple[str, ...]) -> list[PiiSpan]:
    out = []
    for m in _PHONE_CANDIDATE.finditer(text):
        raw, start = m.group(0), m.start()
        if raw.startswith("(") and raw.count("(") > raw.count(")"):
            raw, start = raw[1:], start + 1  # "(call 030 ...)": the bracket is the sentence's
        if raw.count(")") > raw.count("("):
            raw = raw[: raw.rindex(")")].rstrip(" ./-")
        digits = re.sub(r"\D", "", raw)
        if not 6 <= len(digits) <= 15 or _DATE_LIKE.match(raw):
            continue
        international = raw.startswith("+") or raw.startswith("00")
        before = text[max(0, start - 40) : start]
        if _REFERENCE_CUE.search(before.rstrip()):
            continue  # "order 0301234567": introduced as a reference, whatever else is near
        if not international:
            cued = bool(_PHONE_CUE.search(before))
            shaped = bool(_TRUNK_GROUPED.match(raw) or _NANP_GROUPED.match(raw))
            if not (cued or shaped):
                continue
        if _valid_phone(raw, regions):
            out.append(PiiSpan("phone", start, start + len(raw)))
    return out


@lru_cache(maxsize=4096)
def _valid_phone(raw: str, regions: tuple[str, ...]) -> bool:
    for region in (None,) if raw.startswith("+") else regions:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


# ---- postal address (built in: street + number + postal code + town) ---------------------------
_STREET_WORD = (
    r"(?:[A-ZÄÖÜ][\wäöüßéèà'.-]*(?:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|ring|damm|ufer|"
    r"chaussee|steig|markt)|[A-ZÄÖÜ][\wäöüß.-]+ (?:Stra(?:ß|ss)e|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm)|"
    r"(?:[A-Z][\w'-]+ ){1,3}(?:Street|St\.|Road|Rd\.|Avenue|Ave\.|Lane|Ln\.|Drive|Dr\.|Boulevard|Blvd\.|"
    r"Way|Close|Square|Place|Terrace)|[A-Z][\w'-]+(?:straat|laan|weg|plein|gracht|kade))"
)
_ADDRESS = re.compile(
    rf"(?:\b{_STREET_WORD}\s+\d{{1,4}}\s?[a-zA-Z]?|"
    r"\b\d{1,4}\s?(?:bis|ter)?,?\s(?:rue|avenue|boulevard|bd|place|allée|chemin|impasse|quai)\s(?:[\wÀ-ÿ'-]+\s?){1,4}|"
    r"\b\d{1,5}\s(?:[A-Z][\w'-]+\s){1,3}(?:Street|St\.|Road|Rd\.|Avenue|Ave\.|Lane|Drive|Boulevard|Blvd\.|Way))"
    r"(?:,\s*|\s+)(?:[A-Z]{1,2}-)?(?:\d{4,5}(?:\s?[A-Z]{2})?|[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2})\s+"
    r"[A-ZÄÖÜ][\wäöüßÀ-ÿ-]+(?:\s(?:am|an der|upon|sur|[A-Z][\w-]+))?"
)
# A UK address often ends in the town before the postcode: "10 Downing Street, London SW1A 2AA"
_ADDRESS_UK = re.compile(
    r"\b\d{1,4}\s(?:[A-Z][\w'-]+\s){1,3}(?:Street|St\.|Road|Rd\.|Avenue|Lane|Drive|Way),\s"
    r"[A-Z][\w-]+\s[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b"
)


def _find_addresses(text: str) -> list[PiiSpan]:
    return [PiiSpan("address", m.start(), m.end()) for p in (_ADDRESS, _ADDRESS_UK) for m in p.finditer(text)]


# ---- the optional named-entity extra ---------------------------------------------------------
@lru_cache(maxsize=1)
def _presidio():
    """Presidio's analyzer with its default spaCy model, or None when the extra is absent."""
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        return None
    try:
        return AnalyzerEngine()
    except Exception:  # noqa: BLE001 - installed but no spaCy model: say "not covered", do not fail a batch
        return None


def _find_named_entities(text: str) -> list[PiiSpan]:
    engine = _presidio()
    if engine is None:
        return []
    kinds = {"PERSON": "person", "LOCATION": "address"}
    return [
        PiiSpan(kinds[r.entity_type], r.start, r.end)
        for r in engine.analyze(text=text, language="en", entities=list(kinds), score_threshold=0.6)
    ]


def coverage() -> dict[str, str]:
    """What this installation redacts, per type: "checked" (a checksum or a parser),
    "pattern", "model" (Presidio), or "not covered: ..."."""
    ner = _presidio() is not None
    return {
        "iban": "checked (mod 97, country length)",
        "card": "checked (Luhn, issuer prefix and length)",
        "email": "pattern (with obfuscations)",
        "phone": "checked (phonenumbers, with region)",
        "address": "pattern (street, number, postal code, town)" + (" + model (Presidio)" if ner else ""),
        "person": "model (Presidio)" if ner else "not covered: install the extra `pii-ner` (Presidio + spaCy)",
    }


# ---- the detector --------------------------------------------------------------------------
def find_pii(text: str, regions: tuple[str, ...] = DEFAULT_REGIONS) -> list[PiiSpan]:
    """Every finding, without overlaps: where two overlap, the earlier-listed, checked kind wins
    (an IBAN's digits are not also a phone number)."""
    if not text:
        return []
    found = [
        *_find_ibans(text),
        *_find_emails(text),
        *_find_cards(text),
        *_find_phones(text, regions),
        *_find_addresses(text),
        *_find_named_entities(text),
    ]
    taken: list[PiiSpan] = []
    for span in found:
        if all(span.end <= t.start or span.start >= t.end for t in taken):
            taken.append(span)
    return sorted(taken, key=lambda s: s.start)


def redact(text: str, regions: tuple[str, ...] = DEFAULT_REGIONS) -> tuple[str, list[str]]:
    """The text with each finding replaced by `[KIND]`, and the kinds found (sorted, once each)."""
    spans = find_pii(text, regions)
    if not spans:
        return text, []
    parts, at = [], 0
    for s in spans:
        parts += [text[at : s.start], f"[{s.kind.upper()}]"]
        at = s.end
    parts.append(text[at:])
    return "".join(parts), sorted({s.kind for s in spans})
