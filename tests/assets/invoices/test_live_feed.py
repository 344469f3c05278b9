"""`bosun dev`'s living feed: every tick new seeded invoices, ids never repeated, across restarts too."""

import json
from collections import Counter

from assets.invoices import sample_data
from assets.invoices.live_feed import feed_chunk
from assets.invoices.training import seed_erp
from orchestration.cli.dev import FEED_STATE, reserve_chunk
from orchestration.core import clock


def test_chunks_have_their_own_ids_and_the_sample_shares_of_edge_cases():
    data = sample_data.generate(300, seed=7)
    sample_ids = {e["id"] for e in data.events}
    chunks = [sample_data.live_chunk(data.vendors, k, 300, seed=7, end=clock.now()) for k in (1, 2)]
    ids = [{e["id"] for e in events} for events, _ in chunks]
    assert not ids[0] & ids[1] and not (ids[0] | ids[1]) & sample_ids
    invoices = [{e["payload"]["invoice_id"] for e in events} for events, _ in chunks]
    assert not invoices[0] & invoices[1]
    events, pos = chunks[0]
    assert max(clock.now() - _at(e) for e in events).total_seconds() <= 240 * 300
    assert min(clock.now() - _at(e) for e in events).total_seconds() >= 0  # nothing from the future
    delivered = Counter(e["id"] for e in events)
    assert any(n > 1 for n in delivered.values())  # re-deliveries, as the sample has them
    memos = " ".join(e["payload"].get("memo", "") for e in events)
    assert "approve" in memos.lower()  # the injection cases too
    assert {p["po_number"] for p in pos} <= {e["payload"]["po_number"] for e in events}


def _at(event):
    from datetime import datetime

    return datetime.fromisoformat(event["occurred_at"])


def test_the_chunk_counter_survives_a_restart(tmp_path):
    assert [reserve_chunk(tmp_path) for _ in range(3)] == [1, 2, 3]
    assert json.loads((tmp_path / FEED_STATE).read_text()) == {"next_chunk": 4}
    assert reserve_chunk(tmp_path) == 4  # a new feeder (a second `make run`) reads the file and goes on


def test_a_second_run_of_the_feed_accepts_new_events_not_only_duplicates(bosun_home):
    from orchestration.definitions import build_definitions, payload_registry

    sample_dir = bosun_home / "sample"
    sample_data.write_sample_data(sample_dir, n_invoices=50, seed=7)
    resources = build_definitions().resources
    seed_erp(resources["erp"], sample_dir)
    first = [feed_chunk(resources, payload_registry, sample_dir, reserve_chunk(bosun_home), 40, 7) for _ in range(2)]
    again = feed_chunk(resources, payload_registry, sample_dir, reserve_chunk(bosun_home), 40, 7)  # "restarted"
    assert [f["chunk"] for f in first] + [again["chunk"]] == [1, 2, 3]
    assert all(f["accepted"] >= 35 for f in [*first, again])
    # The ERP knows each accepted invoice's purchase order (unknown vendors' aside).
    pos = resources["erp"].purchase_orders_frame()
    assert pos["po_number"].str.startswith("PO-L000003-").sum() >= 30
