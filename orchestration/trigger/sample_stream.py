"""What every workflow's sample generator shares: a seeded stream of event envelopes as a hostile
sender delivers them, and the sample's files.

A workflow draws its own entities and cases; this module does the rest the same way for all:
when events arrive (`Arrivals`: integer gaps, a start that follows the clock), the envelope,
re-deliveries and malformed deliveries, text for the input guards (injection attempts, personal
data), documents written from templates, and the files (events, labels, documents) written so
that one seed always gives byte-identical files. Every draw comes from the caller's
`random.Random`, in a fixed order: changing the order here changes every workflow's sample.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from stdnum import luhn

from orchestration.core import clock


@dataclass(frozen=True)
class Arrivals:
    """When a stream's events occur: each a whole number of seconds, drawn uniformly between
    `min_gap_s` and `max_gap_s`, after the one before."""

    min_gap_s: int = 5
    max_gap_s: int = 240

    @property
    def mean_gap_s(self) -> float:
        return (self.min_gap_s + self.max_gap_s) / 2

    def start_ending_today(self, n_events: int, today: date | None = None) -> datetime:
        """Where a stream of n events starts so that it ends about the start of `today` (UTC):
        the same moment all day, so a sample drawn twice on one day is the same sample."""
        day = datetime.combine(today or clock.today(), time(0), tzinfo=timezone.utc)
        return day - timedelta(seconds=round(self.mean_gap_s * n_events))

    def start_ending_before(self, end: datetime, n_events: int) -> datetime:
        """Where a stream of n events starts so that every event occurs before `end`."""
        return end - timedelta(seconds=self.max_gap_s * n_events)

    def instants(self, rng: random.Random, start: datetime, n_events: int) -> Iterator[datetime]:
        """The n instants, each drawn when the caller asks for it (so the caller's own draws
        for that event come after it, as they always did)."""
        at = start
        for _ in range(n_events):
            at += timedelta(seconds=rng.randint(self.min_gap_s, self.max_gap_s))
            yield at


def draw_case(rng: random.Random, rates: Sequence[tuple[str, float]], otherwise: str) -> str:
    """One of mutually exclusive cases, each at its rate (one uniform draw decides), else
    `otherwise`: an event is at most one edge case, so its label is unambiguous."""
    u = rng.random()
    for case, rate in rates:
        if u < rate:
            return case
        u -= rate
    return otherwise


def envelope(
    source: str,
    event_id: str,
    event_type: str,
    occurred_at: datetime | str,
    entity_key: str,
    payload: dict,
    schema_version: int = 1,
) -> dict:
    """An event as its sender delivers it (what `parse_envelope` reads), keys in the envelope's order."""
    return {
        "source": source,
        "id": event_id,
        "type": event_type,
        "schema_version": schema_version,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else occurred_at.isoformat(),
        "entity_key": entity_key,
        "payload": payload,
    }


def with_redeliveries(rng: random.Random, events: list[dict], share: float = 0.02, within: int = 40) -> list[dict]:
    """The stream as an at-least-once sender delivers it: a `share` of the events is sent again
    (same id, a copy) up to `within` events later."""
    later: dict[int, list[dict]] = {}
    for i, event in enumerate(events):
        if rng.random() < share:
            later.setdefault(min(len(events) - 1, i + rng.randint(1, within)), []).append(copy.deepcopy(event))
    out = []
    for i, event in enumerate(events):
        out.append(event)
        out.extend(later.get(i, ()))
    return out


# Spoils an event (a deep copy, in place) so that the inbox refuses it, keeping the reason.
Breaker = Callable[[dict], None]


def drop_schema_version(event: dict) -> None:
    del event["schema_version"]


def with_malformed(rng: random.Random, events: list[dict], share: float, breakers: Sequence[Breaker]) -> list[dict]:
    """A `share` of the deliveries malformed, each by one of the `breakers` (a copy: the
    event itself is left as it was)."""
    return [_malformed(rng, e, breakers) if rng.random() < share else e for e in events]


def _malformed(rng: random.Random, event: dict, breakers: Sequence[Breaker]) -> dict:
    bad = copy.deepcopy(event)
    breakers[rng.randrange(len(breakers))](bad)
    return bad


# ---- text for the input guards --------------------------------------------------------
def injection(rng: random.Random, plain: Sequence[str], encoded: Sequence[str], encoded_share: float = 0.2) -> str:
    """A prompt-injection attempt: one of `plain`, or (`encoded_share` of the time) one of
    `encoded` in base64 behind a harmless label, as one hidden from a keyword filter is sent."""
    if rng.random() < encoded_share:
        blob = base64.b64encode(rng.choice(encoded).encode()).decode()
        return f"Reference: {blob}"
    return rng.choice(plain)


PEOPLE = (("Anna", "Schmidt"), ("James", "Carter"), ("Chloe", "Martin"), ("Luca", "Meier"), ("Emma", "Jansen"))
PHONE_PREFIXES = ("+44 20 7946", "+49 30 9012", "+1 212 555")


def personal_data(rng: random.Random, people: Sequence[tuple[str, str]] = PEOPLE) -> str:
    """A sentence carrying personal data the guards must find: an e-mail address, a phone
    number, an IBAN or a card number, each well-formed (the guards check what they redact)."""
    first, last = rng.choice(people)
    kind = rng.randrange(4)
    if kind == 0:
        return f"Questions to {first.lower()}.{last.lower()}@example.com."
    if kind == 1:
        prefix = rng.choice(PHONE_PREFIXES)
        return f"Call {first} on {prefix} {rng.randrange(10**4):04d}."
    if kind == 2:
        number = iban(rng, "DE", 22)
        return f"Please pay to {' '.join(number[i : i + 4] for i in range(0, len(number), 4))}."
    groups = [f"4{rng.randrange(10**3):03d}"] + [f"{rng.randrange(10**4):04d}" for _ in range(3)]
    # The last digit is the Luhn check digit, as on a real card (the guard checks it).
    digits = "".join(groups)[:15]
    number = digits + luhn.calc_check_digit(digits)
    return f"Card on file {' '.join(number[i : i + 4] for i in range(0, 16, 4))}."


def iban(rng: random.Random, country: str, length: int) -> str:
    """A fictitious IBAN of `length` characters; British, Irish and Dutch ones start their
    account number with a four-letter bank code, as the real ones do."""
    bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) if country in ("GB", "IE", "NL") else ""
    digits = length - 4 - len(bank)
    bban = bank + f"{rng.randrange(10**digits):0{digits}d}"
    # Real mod-97 check digits, so validators downstream see a well-formed (if fictitious) IBAN.
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


# ---- documents and files --------------------------------------------------------------
def documents_from_templates(templates: Path, values: Mapping[str, Any]) -> dict[str, str]:
    """Every markdown template in `templates` (by file name) with `values` filled in:
    templates are files so the documents read (and diff) as documents."""
    return {p.name: p.read_text(encoding="utf-8").format(**values) for p in sorted(templates.glob("*.md"))}


def write_documents(directory: Path, documents: Mapping[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        write_text(directory / name, text)


def load_documents(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.md"))}


def write_text(path: Path, text: str) -> None:
    # UTF-8 and "\n" whatever the platform, so one seed gives the same bytes everywhere.
    path.write_text(text, encoding="utf-8", newline="\n")


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_labels(path: Path, labels: Mapping[str, Mapping[str, Any]]) -> None:
    """The ground truth, one line per event: `{"event_id": ..., <its label's fields>}`."""
    write_jsonl(path, [{"event_id": k, **v} for k, v in labels.items()])


def load_labels(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return {r.pop("event_id"): r for r in rows}
