"""The ticket workflow's decision layer on labelled tickets (`benchmarks/decisions.py --workflow
tickets`): local only vs LLM only vs routed, through the real decision loop (context, router,
guardrails, calibrated confidence). The LLM is the fake Chat Completions server
(tests/fakes/openai_server.py): with probability `noise` it answers a team and priority drawn
at random without looking at the truth; otherwise it answers the labels of the ticket it reads.

Each set-up's calibrator is fitted on another labelled sample decided the same way; ECE is on
this one. Accuracy per output (team, priority, auto-reply) is over the tickets decided without
a person; every LLM request is scanned for the sample's personal data."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

TEAMS = ("account", "billing", "technical", "shipping", "legal")
PRIORITIES = ("low", "normal", "high", "urgent")
FORBIDDEN = {"legal_threat", "injection", "large_refund"}  # the sample's tickets no automatic reply may answer


def inbox_events(events: list[dict]):
    from assets.tickets.context import register
    from orchestration.trigger.envelope import PayloadRegistry
    from orchestration.trigger.sample_events import as_inbox_events

    registry = PayloadRegistry()
    register(registry)
    return as_inbox_events(events, registry)


def contexts_of(base: Path, name: str, n: int, seed: int):
    """Contexts of a labelled sample read from its own CRM and helpdesk, and the truth by event key."""
    from assets.tickets import context, demo, sample_data
    from assets.tickets.systems import TicketSystems
    from orchestration.context.frame import context_hash

    crm, events, labels = sample_data.generate(n, seed)
    desk = TicketSystems(url=f"sqlite:///{base / f'{name}-desk.db'}")
    demo.seed_systems(desk, crm, events)
    snap = {"as_of": "2026-01-01T00:00:00+00:00", "customers": desk.customers()}
    records, _ = context.contexts(inbox_events(events), desk, context.build_index(), snap)
    for r in records:
        r["context_hash"] = context_hash(r)
    truth = {f"helpdesk:{e['id']}": labels[e["id"]] for e in events}
    return records, truth, crm


def answerer(truth_by_text: dict, noise: float, seed: int):
    rng = random.Random(seed)

    def reply(body):
        prompt = body["messages"][0]["content"]
        text = prompt.split("Ticket:\n", 1)[1].split("\n\nCustomer (from the CRM):", 1)[0]
        article = re.search(r"\[(kb-\d\d-[a-z0-9-]+)\]", prompt.split("Help-centre articles:", 1)[1])
        if rng.random() < noise or text not in truth_by_text:  # a wrong answer never reads the truth
            team, priority, confidence, answer = rng.choice(TEAMS), rng.choice(PRIORITIES), rng.uniform(0.5, 0.9), False
        else:
            t = truth_by_text[text]
            team, priority, confidence, answer = t["team"], t["priority"], rng.uniform(0.8, 1.0), t["auto_reply"]
        cited = article.group(1) if article and answer else ""
        reply = f"Please see our help article [{cited}]." if cited else ""
        return {
            "team": team,
            "priority": priority,
            "reply": reply,
            "cited_article": cited,
            "confidence": round(confidence, 3),
        }

    return reply


def decide(contexts, local_model, llm, routing, calibrator=None):
    from assets.tickets import SPEC, context, reasoning
    from orchestration.decision.batch import decide_batch

    reasoner = reasoning.Reasoner(local_model, llm, None, routing)
    more = reasoning.read_more(llm.enabled, context.build_index, 5)
    return decide_batch([dict(c) for c in contexts], reasoner.reason, SPEC, calibrator, more)


def joint_correct(d: dict, t: dict, replied: bool | None = None) -> bool:
    replied = bool(d.get("reply")) if replied is None else replied
    return d["team"] == t["team"] and d["priority"] == t["priority"] and replied == t["auto_reply"]


def run(name, data, calib, local_model, llm, routing, fake) -> dict:
    from orchestration.decision.confidence import expected_calibration_error, fit_and_report

    contexts, truth = data
    first = decide(calib[0], local_model, llm, routing)
    calibrator = fit_and_report(
        [d["probability"] for d in first],
        [joint_correct(d, calib[1][d["key"]]) for d in first],
        ["local" if d["model"] == "local" else "llm" for d in first],
    )
    before, started = len(fake.requests) if fake else 0, time.perf_counter()
    decisions = decide(contexts, local_model, llm, routing, calibrator)
    auto = [d for d in decisions if d["route"] != "escalate"]
    sent = lambda d: d["final_decision"] == "route_and_reply"  # noqa: E731
    acc = {
        "team": [d["team"] == truth[d["key"]]["team"] for d in auto],
        "priority": [d["priority"] == truth[d["key"]]["priority"] for d in auto],
        "auto_reply": [sent(d) == truth[d["key"]]["auto_reply"] for d in auto],
    }
    modelled = [d for d in decisions if not d["guardrails"]["blocked_by"]]
    hit = [joint_correct(d, truth[d["key"]]) for d in modelled]
    n = len(decisions)
    return {
        "setup": name,
        **{f"{k}_accuracy": round(sum(v) / max(1, len(v)), 4) for k, v in acc.items()},
        # Right without a person, over all tickets: accuracy that does not hide escalations.
        "team_correct_unattended": round(sum(acc["team"]) / n, 4),
        "all_correct_unattended": round(sum(joint_correct(d, truth[d["key"]], sent(d)) for d in auto) / n, 4),
        "escalation_rate": round(1 - len(auto) / n, 4),
        "llm_share": round(sum(d["model"] != "local" for d in decisions) / n, 4),
        "llm_requests": (len(fake.requests) - before) if fake else 0,
        "ece_after": round(expected_calibration_error([d["probability_calibrated"] for d in modelled], hit), 4),
        # A wrong guess (an ambiguous ticket answered from an article) vs a reply the policy forbids.
        "replies_where_a_person_should_answer": sum(sent(d) and not truth[d["key"]]["auto_reply"] for d in auto),
        "replies_outside_policy": sum(sent(d) and bool(FORBIDDEN & set(truth[d["key"]]["flags"])) for d in auto),
        "seconds": round(time.perf_counter() - started, 2),
    }


def main(args, base: Path) -> int:
    from openai_server import FakeOpenAI

    from assets.tickets import demo, reasoning
    from assets.tickets.systems import TicketSystems
    from orchestration.decision.routing import RoutingPolicy
    from resources.chat_model import DisabledChatModel
    from resources.llm import OpenAIStructuredLLM
    from resources.local_model import LocalModel

    local_model = LocalModel(model_dir=str(base / "models"))
    demo.prepare(base / "train", 10, args.seed, TicketSystems(url=f"sqlite:///{base / 'train.db'}"), local_model)
    contexts, truth, crm = contexts_of(base, "sample", args.events, args.seed)
    calib_contexts, calib_truth, _ = contexts_of(base, "calibration", args.events, args.calibration_seed)
    truth_by_text = {c["text"]: truth[c["key"]] for c in contexts} | {
        c["text"]: calib_truth[c["key"]] for c in calib_contexts
    }
    llm_only = RoutingPolicy(
        threshold=1.0, force={"quarantined": "local", "standard": "llm"}, when_llm_unavailable="local"
    )
    data, calib = (contexts, truth), (calib_contexts, calib_truth)
    with FakeOpenAI() as fake:
        fake.set_default(("ok", answerer(truth_by_text, args.noise, args.seed)))
        llm = OpenAIStructuredLLM(api_key="sk-bench", base_url=fake.base_url, model="gpt-4o-mini", max_attempts=1)
        results = [
            run("local only", data, calib, local_model, DisabledChatModel(), None, None),
            run("LLM only", data, calib, local_model, llm, llm_only, fake),
            run("routed", data, calib, local_model, llm, reasoning.ROUTING, fake),
        ]
        bodies = json.dumps([r["body"] for r in fake.requests])
    pii = {c["email"] for c in crm} | {c["name"] for c in crm}
    leaks = sorted(p for p in pii if p in bodies)
    print(f"ticket decision benchmark: {args.events} labelled tickets (seed {args.seed}), LLM noise {args.noise}")
    for r in results:
        print(r["setup"] + ": " + ", ".join(f"{k} {v}" for k, v in r.items() if k != "setup"))
    routed, only = results[2], results[1]
    goals = {
        "llm_share <= 0.20 (routed)": routed["llm_share"] <= 0.20,
        "routed right without a person >= LLM only": routed["all_correct_unattended"] >= only["all_correct_unattended"],
        "team accuracy local only >= 0.85": results[0]["team_accuracy"] >= 0.85,
        # The acceptance's calibration goal is the local model's; the others' ECE is reported.
        "ece_after <= 0.05 (local only)": results[0]["ece_after"] <= 0.05,
        "no reply outside the policy": all(r["replies_outside_policy"] == 0 for r in results),
        "no customer name or e-mail in any LLM request": not leaks,
    }
    for goal, ok in goals.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {goal}")
    print(json.dumps({"results": results, "goals": goals, "pii_leaks": leaks[:10]}))
    return 0 if all(goals.values()) else 1
