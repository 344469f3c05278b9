"""The decision layer on labelled invoices: accuracy, calibration, escalation, LLM share.

Three routing set-ups decide the same labelled sample (default 2,000 invoices) through the
real decision path (context, router, guardrails, confidence), with the LLM played by the
fake Chat Completions server (tests/fakes/openai_server.py) answering from the ground
truth with configurable noise (a wrong answer, stated with lower confidence):

1. local only  - no LLM configured (the embedded default);
2. LLM only    - every decision sent to the LLM (except quarantined text, never sent);
3. routed      - the workflow's router: the LLM only where the local model is unsure or
                 a rule sends it.

Each set-up's calibrator is fitted on another labelled sample (reviewed outcomes) decided
the same way, and ECE is measured on this one. Accuracy is over the decisions taken
without a person (`correct_unattended`: right without a person, over all). Every LLM request body is scanned for the sample's personal data.

    python benchmarks/decisions.py [--events 2000] [--seed 7] [--noise 0.1]
    python benchmarks/decisions.py --workflow tickets    # the ticket workflow (ticket_decisions.py)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

# The fake LLM server; appended, so tests/assets never shadows the assets package.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "fakes"))


def ground_truth_answerer(label_of: dict, noise: float, seed: int):
    rng = random.Random(seed)
    choices = ["approve", "hold", "reject"]

    def reply(body):
        prompt = body["messages"][0]["content"]
        facts = json.loads(prompt.split("Facts checked against the ERP:\n", 1)[1].split("\n\nInvoice:", 1)[0])
        invoice = json.loads(prompt.split("Invoice:\n", 1)[1])
        truth = label_of[(invoice["invoice_id"], invoice["vendor_id"], invoice["amount"], facts["already_paid"])]
        if rng.random() < noise:
            decision, confidence = rng.choice([c for c in choices if c != truth]), rng.uniform(0.5, 0.9)
        else:
            decision, confidence = truth, rng.uniform(0.8, 1.0)
        return {
            "decision": decision,
            "amount": float(invoice["amount"]),
            "confidence": round(confidence, 3),
            "reason": "benchmark answer",
        }

    return reply


def labelled(directory: Path):
    from assets.invoices import sample_data
    from assets.invoices.workflow import registry
    from orchestration.trigger.sample_events import as_inbox_events, read_events

    labels = sample_data.load_labels(directory)
    events = as_inbox_events(read_events(directory / "invoices.jsonl"), registry)
    return events, labels


def personal_data(directory: Path) -> set[str]:
    """Every personal-data string the sample carries: memo e-mails, phones, IBANs, cards, vendor IBANs."""
    from assets.invoices import sample_data

    found = set()
    for line in (directory / "invoices.jsonl").read_text().splitlines():
        memo = json.loads(line)["payload"]["memo"]
        found |= set(re.findall(r"[\w.]+@example\.com", memo))
        for m in re.findall(r"(?:on|to|file) ((?:\+?[\dA-Z]{2,4} ?){3,8})\.", memo):
            found |= {m.strip(), m.replace(" ", "")}
    vendors, _ = sample_data.load_erp(directory)
    found |= {v["iban"] for v in vendors}
    return {f for f in found if len(f) >= 8}


def run(name, contexts, events_by_key, labels, local_model, llm, routing, calib_dir, index, fake, ledger_url):
    from assets.invoices.calibration import fit_calibrator
    from assets.invoices.decisions import decide
    from orchestration.decision.confidence import expected_calibration_error
    from orchestration.decision.llm_ledger import LLMLedger

    calibrator = fit_calibrator(calib_dir, local_model, llm, LLMLedger(ledger_url + "-cal.db"), routing)
    before = len(fake.requests) if fake else 0
    started = time.perf_counter()
    decisions = decide(contexts, local_model, llm, LLMLedger(ledger_url + ".db"), index, calibrator, routing)
    seconds = time.perf_counter() - started
    truth = {d["key"]: labels[events_by_key[d["key"]]]["label"] for d in decisions}
    auto = [d for d in decisions if d["route"] != "escalate"]
    modelled = [d for d in decisions if not d["guardrails"]["blocked_by"] and d["decision"] != "no_result"]
    hit = [d["decision"] == truth[d["key"]] for d in modelled]
    n = len(decisions)
    return {
        "setup": name,
        "decisions": n,
        "accuracy": round(sum(d["final_decision"] == truth[d["key"]] for d in auto) / max(1, len(auto)), 4),
        "escalation_rate": round(1 - len(auto) / n, 4),
        # Right without a person, over all decisions: accuracy that does not hide escalations.
        "correct_unattended": round(sum(d["final_decision"] == truth[d["key"]] for d in auto) / n, 4),
        "llm_share": round(sum(d["model"] != "local" for d in decisions) / n, 4),
        "llm_requests": (len(fake.requests) - before) if fake else 0,
        "cost_usd": round(sum(d["cost_usd"] for d in decisions), 4),
        "ece_before": round(expected_calibration_error([d["probability"] for d in modelled], hit), 4),
        "ece_after": round(expected_calibration_error([d["probability_calibrated"] for d in modelled], hit), 4),
        "calibration_examples": calibrator.report.get("examples"),
        "seconds": round(seconds, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--calibration-seed", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.1, help="share of LLM answers that are wrong")
    ap.add_argument("--workflow", choices=("invoices", "tickets"), default="invoices")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bosun-bench-decisions-"))
    os.environ["BOSUN_HOME"] = str(base)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "BOSUN_LLM_MODEL", "BOSUN_DATABASE_URL"):
        os.environ.pop(var, None)
    if args.workflow == "tickets":
        from ticket_decisions import main as tickets

        return tickets(args, base)
    from openai_server import FakeOpenAI

    from assets.invoices import sample_data
    from assets.invoices.context import assemble_context
    from assets.invoices.demo import prepare
    from assets.invoices.erp import ERPResource
    from assets.invoices.training import seed_erp
    from assets.invoices.workflow import ROUTING
    from orchestration.decision.routing import RoutingPolicy
    from resources.chat_model import DisabledChatModel
    from resources.knowledge_base import PolicyIndex
    from resources.llm import OpenAIStructuredLLM
    from resources.local_model import LocalModel

    erp = ERPResource(url=f"sqlite:///{base / 'erp.db'}")
    local_model = LocalModel(model_dir=str(base / "models"))
    prepare(base / "sample", args.events, args.seed, erp, local_model)  # model trained on another seed
    calib_dir = base / "calibration"
    sample_data.write_sample_data(calib_dir, n_invoices=args.events, seed=args.calibration_seed)
    events, labels = labelled(base / "sample")
    calib_events, calib_labels = labelled(calib_dir)
    index = PolicyIndex(sample_data.load_policy_documents(base / "sample"))
    contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, index)
    events_by_key = {e.key: e.envelope.id for e in events}

    # The fake answers from the truth of both samples, keyed by what the prompt shows.
    label_of = {}
    scratch = ERPResource(url=f"sqlite:///{base / 'calibration-erp.db'}")
    seed_erp(scratch, calib_dir)
    for evs, labs, e_rp in ((events, labels, erp), (calib_events, calib_labels, scratch)):
        ctx = assemble_context(evs, e_rp.vendors_frame(), e_rp.purchase_orders_frame(), e_rp, None)
        ids = {e.key: e.envelope.id for e in evs}
        for c in ctx:
            inv = c["invoice"]
            label_of[(inv["invoice_id"], inv["vendor_id"], inv["amount"], c["facts"]["already_paid"])] = labs[
                ids[c["key"]]
            ]["label"]

    llm_only = RoutingPolicy(
        threshold=1.0, force={"standard": "llm", "large_amount": "llm", "quarantined_text": "local"}
    )
    results = []
    with FakeOpenAI() as fake:
        fake.set_default(("ok", ground_truth_answerer(label_of, args.noise, args.seed)))
        llm = OpenAIStructuredLLM(api_key="sk-bench", base_url=fake.base_url, model="gpt-4o-mini")
        ledger = f"sqlite:///{base}/ledger"
        results.append(
            run(
                "local only",
                contexts,
                events_by_key,
                labels,
                local_model,
                DisabledChatModel(),
                None,
                calib_dir,
                index,
                None,
                ledger + "-local",
            )
        )
        results.append(
            run(
                "LLM only",
                contexts,
                events_by_key,
                labels,
                local_model,
                llm,
                llm_only,
                calib_dir,
                index,
                fake,
                ledger + "-llm",
            )
        )
        results.append(
            run(
                "routed",
                contexts,
                events_by_key,
                labels,
                local_model,
                llm,
                ROUTING,
                calib_dir,
                index,
                fake,
                ledger + "-routed",
            )
        )
        bodies = json.dumps([r["body"] for r in fake.requests])
    pii = personal_data(base / "sample") | personal_data(calib_dir)
    leaks = sorted(p for p in pii if p in bodies)

    print(
        f"decision benchmark: {args.events} labelled invoices (seed {args.seed}), LLM noise {args.noise}, "
        f"calibrated on seed {args.calibration_seed}"
    )
    cols = [
        "setup",
        "accuracy",
        "escalation_rate",
        "correct_unattended",
        "llm_share",
        "llm_requests",
        "cost_usd",
        "ece_before",
        "ece_after",
        "seconds",
    ]
    print("  ".join(f"{c:>15}" for c in cols))
    for r in results:
        print("  ".join(f"{str(r[c]):>15}" for c in cols))
    routed, only = results[2], results[1]
    goals = {
        "llm_share <= 0.20 (routed)": routed["llm_share"] <= 0.20,
        "accuracy routed >= LLM only": routed["accuracy"] >= only["accuracy"],
        "ece_after < 0.05 (every setup)": all(r["ece_after"] < 0.05 for r in results),
        "no personal data in any LLM request": not leaks,
    }
    print(
        f"LLM requests captured: {len(fake.requests)}; personal-data strings checked: {len(pii)}; "
        f"found in requests: {len(leaks)}"
    )
    for goal, ok in goals.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {goal}")
    print(json.dumps({"results": results, "goals": goals, "pii_leaks": leaks}))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
