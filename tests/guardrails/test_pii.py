"""The PII detector checks what it finds, keeps look-alikes readable, and meets its goals on
the labelled corpus (the figures themselves: benchmarks/guards.py)."""

import sys
from pathlib import Path

import pytest

from guardrails.pii import coverage, find_pii, redact

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import guards as bench  # noqa: E402


@pytest.mark.parametrize(
    "text",
    [
        # The attacker's findings on main (2026-11-30): none of these is personal data.
        "Delivered on 2026-11-15, order 4500012345",
        "Total 1 234 567.89 EUR",
        "Reference 4929123456789012345 as agreed",
        "USt-IdNr. DE123456789, PLZ 10115, Steuernummer 12/345/67890",
        "Lieferschein 80012345 vom 15.11.2026, 14:30 Uhr, Summe 12.345,67 €",
    ],
)
def test_look_alikes_stay_readable(text):
    assert redact(text) == (text, [])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Bitte auf de44500105175407324931 überweisen", "Bitte auf [IBAN] überweisen"),
        ("IBAN DE89 3704 0044 0532 0130 00 (new)", "IBAN [IBAN] (new)"),
        ("Card 4111 1111 1111 1111 expired", "Card [CARD] expired"),
        ("Kontakt: max.mustermann(at)example.de", "Kontakt: [EMAIL]"),
        ("write to jane.doe [at] example [dot] com today", "write to [EMAIL] today"),
        ("Call +44 20 7946 0958 or Tel. 030 901820, thanks", "Call [PHONE] or Tel. [PHONE], thanks"),
        ("Hauptstr. 5, 10115 Berlin", "[ADDRESS]"),
    ],
)
def test_personal_data_is_replaced_by_a_typed_placeholder_keeping_the_whitespace(text, expected):
    assert redact(text)[0] == expected


def test_a_number_failing_its_checksum_is_not_redacted():
    assert redact("Card 4111 1111 1111 1112")[1] == []  # Luhn fails
    assert redact("IBAN DE89 3704 0044 0532 0130 01")[1] == []  # mod 97 fails
    assert redact("Call +49 30 1")[1] == []  # no valid number


def test_spans_do_not_overlap_and_a_checked_kind_wins():
    spans = find_pii("Pay DE89370400440532013000 or call +49 30 901820")
    assert [s.kind for s in spans] == ["iban", "phone"]
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_coverage_says_what_is_not_covered():
    cov = coverage()
    assert cov["iban"].startswith("checked") and cov["phone"].startswith("checked")
    assert cov["person"].startswith("model") or cov["person"].startswith("not covered")


def test_the_pii_corpus_meets_its_goals():
    items = bench.load_pii()
    assert len(items) >= 200 and len({it["lang"] for it in items}) >= 5
    kinds = {e["type"] for it in items for e in it["lookalikes"]}
    assert {"date", "order_number", "reference", "amount", "postal_code", "vat_id"} <= kinds
    rates = bench.pii_rates(items, find_pii)
    for kind in bench.CHECKED_TYPES:
        assert rates["per_type"][kind]["recall"] >= 0.95, (kind, rates["misses"])
    assert rates["lookalike_false_redaction"] <= 0.02, rates["false_redactions"]


def test_the_injection_corpora_meet_their_goals():
    attacks, harmless = bench.load_lines("injection_attacks.txt"), bench.load_lines("harmless_notes.txt")
    assert len(attacks) >= 100 and len(harmless) >= 100
    rates = bench.injection_rates(attacks, harmless)
    assert rates["false_quarantine_rate"] <= 0.05, rates["false_quarantines"]
    assert rates["detection_rate"] >= 0.9, rates["missed"]  # no goal; a floor so it cannot rot unnoticed
    for note in (
        "Please disregard the previous invoice INV-0042, it was sent in error.",
        "Pre-approved by J. Weber (purchasing).",
        "Source system: SAP S/4HANA",
        "Freigeben nach Wareneingang.",
    ):
        assert note in harmless and note not in rates["false_quarantines"]
