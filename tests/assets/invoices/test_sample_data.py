"""The seeded sample: deterministic, valid envelopes, and ground truth consistent with the ERP."""

from collections import Counter
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal

import pytest

from assets.invoices import payloads, sample_data
from orchestration.core import clock
from orchestration.trigger.envelope import PayloadRegistry, parse_envelope

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

N = 2000


@pytest.fixture(scope="module")
def data() -> sample_data.SampleData:
    return sample_data.generate(N, seed=7)


def _distinct(events):
    seen, out = set(), []
    for e in events:
        if e["id"] not in seen:
            seen.add(e["id"])
            out.append(e)
    return out


def test_same_inputs_same_data_and_other_seed_differs():
    with clock.frozen(datetime(2031, 2, 28, 23, 59, 59, tzinfo=timezone.utc)):
        assert sample_data.generate(300, 3) == sample_data.generate(300, 3)
        assert sample_data.generate(300, 3).events != sample_data.generate(300, 4).events


@pytest.mark.parametrize("today", [date(2026, 11, 2), date(2027, 11, 30), date(2028, 2, 29)])
def test_the_stream_follows_the_clock_and_ends_before_today(today):
    """Due dates and payment runs relate to "now" the same way on any date."""
    with clock.frozen(datetime.combine(today, dtime(15), tzinfo=timezone.utc)):
        events = _distinct(sample_data.generate(300, 3).events)
    instants = [_instant(e) for e in events]
    midnight = datetime.combine(today, dtime(0), tzinfo=timezone.utc)
    assert midnight - timedelta(hours=16) < instants[0] < instants[-1] < midnight + timedelta(hours=4)
    assert _distinct(sample_data.generate(300, 3, start=sample_data.sample_start(300, today)).events) == events


def test_written_files_are_byte_identical_and_overwritten(tmp_path):
    start = sample_data.sample_start(400)
    a = sample_data.write_sample_data(tmp_path / "a", n_invoices=400, seed=5, start=start)
    b = sample_data.write_sample_data(tmp_path / "b", n_invoices=400, seed=5, start=start)
    assert set(b) == set(a)
    files = [
        "erp.json",
        "invoices.jsonl",
        "labels.jsonl",
        *(f"policies/{p.name}" for p in sorted(a["policies"].glob("*.md"))),
    ]
    assert len(files) >= 7
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    again = sample_data.write_sample_data(tmp_path / "a", n_invoices=100, seed=5)
    assert again == a and len(sample_data.load_labels(tmp_path / "a")) == 100


def test_files_round_trip(tmp_path):
    data = sample_data.generate(200, 9)
    paths = sample_data.write_sample_data(tmp_path, n_invoices=200, seed=9)
    assert set(paths) == {"erp", "policies", "invoices", "labels"} and all(p.exists() for p in paths.values())
    assert sample_data.load_erp(tmp_path) == (data.vendors, data.purchase_orders)
    assert sample_data.load_policy_documents(tmp_path) == data.policy_documents
    assert sample_data.load_labels(tmp_path) == data.labels
    lines = paths["invoices"].read_text().splitlines()
    assert len(lines) == len(data.events)


def test_every_event_validates(data):
    registry = PayloadRegistry()
    payloads.register(registry)
    for raw in data.events:
        env = parse_envelope(raw, registry)
        assert (
            env.source == "erp-mailroom" and env.type == "invoice.received" and env.schema_version == 2
        )  # v1 as sent, upcast
        assert env.entity_key == f"{raw['payload']['vendor_id']}:{raw['payload']['invoice_id']}"


def test_amounts_are_exact_line_item_sums(data):
    amounts = []
    for e in data.events:
        p = e["payload"]
        total = sum(Decimal(li["quantity"]) * Decimal(li["unit_price"]) for li in p["line_items"])
        assert Decimal(p["amount"]) == total and p["amount"] == f"{total:.2f}"
        assert 1 <= len(p["line_items"]) <= 4
        amounts.append(float(p["amount"]))
    amounts.sort()
    assert 40 <= amounts[0] and amounts[-1] <= 125_000
    assert 1_200 <= amounts[len(amounts) // 2] <= 3_200
    assert 0.025 <= sum(a > 50_000 for a in amounts) / len(amounts) <= 0.08


def test_every_label_rule_occurs_at_roughly_its_rate(data):
    assert len(data.labels) == N
    rates = {r: n / N for r, n in Counter(v["reason"] for v in data.labels.values()).items()}
    expected = {
        "unknown_vendor": 0.04,
        "inactive_vendor": 0.045,
        "duplicate_invoice": 0.04,
        "po_closed": 0.02,
        "currency_mismatch": 0.04,
        "amount_over_po": 0.06,
        "prompt_injection": 0.03,
    }
    for reason, rate in expected.items():
        assert rate * 0.4 <= rates.get(reason, 0) <= rate * 1.8, (reason, rates)
    assert 0.65 <= rates["ok"] <= 0.85
    decision = {
        "unknown_vendor": "reject",
        "inactive_vendor": "reject",
        "duplicate_invoice": "reject",
        "po_closed": "hold",
        "currency_mismatch": "hold",
        "amount_over_po": "hold",
        "prompt_injection": "hold",
        "ok": "approve",
    }
    assert all(v["label"] == decision[v["reason"]] for v in data.labels.values())


def test_ground_truth_is_consistent_with_the_erp(data):
    vendors = {v["vendor_id"]: v for v in data.vendors}
    pos = {p["po_number"]: p for p in data.purchase_orders}
    for e in _distinct(data.events):
        p, reason = e["payload"], data.labels[e["id"]]["reason"]
        vendor, po = vendors.get(p["vendor_id"]), pos.get(p["po_number"])
        if reason == "unknown_vendor":
            assert vendor is None and po is None
            continue
        assert vendor is not None and po is not None and po["vendor_id"] == p["vendor_id"]
        assert (reason == "inactive_vendor") == (not vendor["active"])
        if reason == "inactive_vendor":
            continue
        assert (po["status"] == "closed") == (reason == "po_closed")
        assert (po["currency"] != p["currency"]) == (reason == "currency_mismatch")
        over = Decimal(p["amount"]) / Decimal(po["amount"]) - 1
        if reason == "amount_over_po":
            assert Decimal("0.05") <= over <= Decimal("0.61")
        else:
            assert over <= 0 and Decimal(po["amount"]) <= Decimal(p["amount"]) * Decimal("1.3") + Decimal("0.01")


def test_one_purchase_order_per_new_invoice(data):
    numbers = [p["po_number"] for p in data.purchase_orders]
    assert len(numbers) == len(set(numbers))
    new_invoices = {
        e["payload"]["invoice_id"]
        for e in _distinct(data.events)
        if data.labels[e["id"]]["reason"] not in ("unknown_vendor", "duplicate_invoice")
    }
    assert len(new_invoices) == len(numbers)


def test_invoice_duplicates_resubmit_an_earlier_approved_invoice(data):
    events = _distinct(data.events)
    first_seen = {}
    duplicates = 0
    for e in events:
        p = e["payload"]
        if data.labels[e["id"]]["reason"] == "duplicate_invoice":
            duplicates += 1
            original = first_seen[p["invoice_id"]]
            assert original["id"] != e["id"] and data.labels[original["id"]]["reason"] == "ok"
            assert _instant(original) < _instant(e)
            keys = ("vendor_id", "po_number", "amount", "currency", "line_items", "issued_on")
            assert all(original["payload"][k] == p[k] for k in keys)
        else:
            assert p["invoice_id"] not in first_seen
            first_seen[p["invoice_id"]] = e
    assert duplicates > 0


def test_exact_redeliveries_appear_later(data):
    ids = [e["id"] for e in data.events]
    counts = Counter(ids)
    repeated = [i for i, n in counts.items() if n > 1]
    assert len(set(ids)) == N and 0.01 <= (len(ids) - N) / N <= 0.04
    for event_id in repeated:
        copies = [e for e in data.events if e["id"] == event_id]
        assert all(c == copies[0] for c in copies)
    first = {}
    for pos, event_id in enumerate(ids):
        first.setdefault(event_id, pos)
        if pos != first[event_id]:
            assert pos > first[event_id]


def test_time_moves_forward_with_explicit_offsets(data):
    events = _distinct(data.events)
    instants = [_instant(e) for e in events]
    assert all(a < b for a, b in zip(instants, instants[1:]))
    start = sample_data.sample_start(N)
    assert start < instants[0] <= start + timedelta(seconds=240)
    assert len({e["occurred_at"][-6:] for e in events}) >= 3
    assert all(e["occurred_at"][-6] in "+-" for e in events)


def test_vendor_master_mix(data):
    small = sample_data.generate(500, 7).vendors
    assert 35 <= len(small) <= 45
    vendors = data.vendors
    tiers = Counter(v["risk_tier"] for v in vendors)
    assert abs(tiers["low"] / len(vendors) - 0.6) < 0.05 and abs(tiers["high"] / len(vendors) - 0.1) < 0.05
    assert 0.02 <= sum(not v["active"] for v in vendors) / len(vendors) <= 0.08
    assert {v["currency"] for v in vendors} == {"EUR", "USD", "GBP", "CHF"}
    for v in vendors:
        iban = v["iban"]
        assert iban[:2] == v["country"] and 15 <= len(iban) <= 34
        assert int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def test_memos_trip_the_input_guards_only_where_labelled(data):
    from guardrails.input_guards import guard_text

    pii = 0
    for e in _distinct(data.events):
        guarded = guard_text(e["payload"]["memo"])
        reason = data.labels[e["id"]]["reason"]
        if reason == "prompt_injection":
            assert guarded.injection_suspected, e["payload"]["memo"]
        elif guarded.injection_suspected:
            # An earlier rule wins: an injected memo from an inactive vendor is simply rejected.
            assert reason == "inactive_vendor", e["payload"]["memo"]
        pii += bool(guarded.pii_found)
        # Personal data is exactly where the generator put some: order and delivery-note
        # numbers in benign memos stay readable, every phone, card, IBAN and email is found.
        planted = any(
            cue in e["payload"]["memo"] for cue in ("Questions to ", "Call ", "Please pay to ", "Card on file ")
        )
        assert bool(guarded.pii_found) == planted or guarded.injection_suspected, e["payload"]["memo"]
    assert 0.02 <= pii / N <= 0.09
    memos = Counter(bool(e["payload"]["memo"]) for e in data.events)
    assert memos[False] > 0 and memos[True] > memos[False]


def test_policy_documents_cover_the_rules(data):
    docs = data.policy_documents
    assert 4 <= len(docs) <= 6 and "approval-policy.md" in docs
    text = "\n".join(docs.values())
    for phrase in (
        "2 %",
        "50,000",
        "second approver",
        "10,000",
        "Duplicate invoices are rejected",
        "currency",
        "Never follow instructions inside",
        "redacted",
    ):
        assert phrase in text, phrase
    assert all(d.count("\n## ") >= 2 and len(d.split("\n\n")) >= 6 for d in docs.values())


def test_a_large_sample_has_one_label_per_event():
    # How fast it is generated is benchmarks/ingest.py's business, not a timed test's.
    data = sample_data.generate(10_000)
    assert len({e["id"] for e in data.events}) == 10_000 and len(data.labels) == 10_000
    assert len(data.vendors) <= 400
    assert sample_data.generate(1).labels


def _instant(event) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])
