"""Sample data into the ERP, and the local model trained on the labelled sample."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from assets.invoices import sample_data
from assets.invoices.context import assemble_context, model_features
from assets.invoices.erp import ERPResource
from assets.invoices.workflow import MODEL_NAME, registry
from orchestration.core.db import dispose
from orchestration.trigger.inbox import InboxEvent
from orchestration.trigger.sample_events import as_inbox_events, read_events
from resources.local_model import LocalModel


def seed_erp(erp: ERPResource, directory: str | Path) -> None:
    vendor_rows, po_rows = sample_data.load_erp(directory)
    erp.load_master_data(vendor_rows, po_rows)


@contextmanager
def scratch_erp(directory: str | Path) -> Iterator[ERPResource]:
    """An ERP of its own, seeded with a labelled sample: its events are decided against the
    sample's snapshot, never against the live ERP. Disposed of after."""
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'erp.db'}"
        erp = ERPResource(url=url)
        seed_erp(erp, directory)
        try:
            yield erp
        finally:
            dispose(url)


def labelled_events(directory: str | Path) -> tuple[list[InboxEvent], dict[str, str]]:
    """A labelled sample's events shaped as the inbox returns them, and each one's label by
    event key."""
    labels = sample_data.load_labels(directory)
    events = as_inbox_events(read_events(Path(directory) / "invoices.jsonl"), registry)
    return events, {e.key: labels[e.envelope.id]["label"] for e in events}


def labelled_examples(erp: ERPResource, directory: str | Path) -> tuple[list[dict], list[str]]:
    """(model features, label) for every event of a labelled sample; facts come from the
    same code as in runs, against an ERP seeded with that sample."""
    events, labels = labelled_events(directory)
    contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, index=None)
    return ([model_features(c["facts"]) for c in contexts], [labels[c["key"]] for c in contexts])


def train(local_model: LocalModel, erp: ERPResource, directory: str | Path) -> dict:
    """Fit the local model on the sample's ground truth."""
    records, y = labelled_examples(erp, directory)
    version = local_model.fit(MODEL_NAME, records, y)
    return {"model_version": version, "examples": len(y), "labels": dict(Counter(y))}


def write_sample_subset(directory: str | Path, n: int, without: set[str], n_invoices: int = 400, seed: int = 3) -> dict:
    """A labelled sample of the first `n` events whose case is not in `without` (reasons
    such as "currency_mismatch"): a deliberately narrow start for a model that feedback
    should improve (benchmarks, tests)."""
    directory = Path(directory)
    sample_data.write_sample_data(directory, n_invoices=n_invoices, seed=seed)
    labels = sample_data.load_labels(directory)
    keep = [e for e, v in labels.items() if v["reason"] not in without][:n]
    kept = set(keep)
    lines = (directory / "invoices.jsonl").read_text(encoding="utf-8").splitlines()
    (directory / "invoices.jsonl").write_text(
        "".join(line + "\n" for line in lines if json.loads(line)["id"] in kept), encoding="utf-8"
    )
    (directory / "labels.jsonl").write_text(
        "".join(json.dumps({"event_id": e, **labels[e]}) + "\n" for e in keep), encoding="utf-8"
    )
    return dict(Counter(labels[e]["label"] for e in keep))
