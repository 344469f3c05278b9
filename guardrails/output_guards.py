"""Guards on text a model wrote before it leaves (a reply to a customer): personal data
other than names allowed to appear, and promises of money, in the languages Bosun reads."""

from __future__ import annotations

import re
from typing import Iterable

from guardrails.pii import find_pii

# A promise, not a mention: "refunds go to the original payment method" is not one.
_MONEY_PROMISE = re.compile(
    r"\b(we|i)\s*(will|'ll|shall|are going to)\s+(refund|reimburse|credit|pay|compensate|transfer)|you\s+will\s+"
    r"(receive|get)\s+(a\s+|your\s+)?(refund|credit|money|\d)|guarantee|wir\s+erstatten|erstatten\s+wir|"
    r"nous\s+(vous\s+)?rembourserons|vous\s+recevrez|le\s+reembolsaremos|recibir[áa]",
    re.I,
)
# The context layer's placeholder for a person's name it redacted.
PERSON_PLACEHOLDER = "[PERSON]"


def promises_money(text: str) -> bool:
    return bool(_MONEY_PROMISE.search(text))


def personal_data(text: str, allowed_names: Iterable[str] = ()) -> list[str]:
    """The kinds of personal data in `text`, once the allowed names are taken out."""
    for name in allowed_names:
        if name:
            text = text.replace(name, "")
    kinds = {s.kind for s in find_pii(text)} | ({"person"} if PERSON_PLACEHOLDER in text else set())
    return sorted(kinds)


def reply_facts(reply: str | None, allowed_names: Iterable[str], citations: Iterable[str]) -> dict:
    """What a policy's reply rules compare: whether the reply cites one of `citations` (as
    `[id]`), carries personal data besides the allowed names, or promises money. All None
    without a reply, so no rule about a reply holds for a decision that sends none."""
    if not reply:
        return {"reply_cites_article": None, "reply_has_personal_data": None, "reply_promises_money": None}
    return {
        "reply_cites_article": any(f"[{c}]" in reply for c in citations),
        "reply_has_personal_data": bool(personal_data(reply, allowed_names)),
        "reply_promises_money": promises_money(reply),
    }
