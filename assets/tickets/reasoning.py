"""Proposals for a batch of tickets: three calibrated text models (team, priority, whether a
reply is right) on every ticket, the LLM for the ones they are unsure of (never for quarantined
text), and a reply grounded in a retrieved article that the guardrails judge before it is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

from guardrails.output_guards import reply_facts
from orchestration.decision.confidence import Calibrator
from orchestration.decision.llm_calls import LOCAL_COSTS, answer_onto, chat_answer, for_the_llm, spend_figures
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.loop import LOW_CONFIDENCE, PassRequest
from orchestration.decision.pricing import price_table
from orchestration.decision.prompts import load_prompt
from orchestration.decision.routing import Question, Router, RoutingPolicy, budget_from_env

PRIORITIES = ("low", "normal", "high", "urgent")
OUTPUTS = {"team": "tickets_team", "priority": "tickets_priority", "auto_reply": "tickets_auto_reply"}
KEPT = ("key", "entity_key", "context_hash", "event", "ticket", "quality_factors", "previous_priority")
TEAMS = ("account", "billing", "technical", "shipping", "legal")
PROMPT = Path(__file__).parent / "prompts" / "triage_ticket.yaml"
# Below this joint local confidence (team x priority x auto-reply) the LLM is asked; quarantined text never goes to it.
ROUTING = RoutingPolicy(threshold=0.52, force={"quarantined": "local"}, when_llm_unavailable="local")


def vip_rule(priority: str, vip: bool, step: int = 1) -> str:
    """VIP customers' tickets go one level higher: the CRM's rule, applied here, so the priority
    model learns only what the text says (`step=-1` takes it back, for training labels)."""
    if not vip or priority not in PRIORITIES or priority == "urgent":
        return priority
    return PRIORITIES[min(3, max(0, PRIORITIES.index(priority) + step))]


def calibrator_path(local_model) -> Path:
    return local_model.artifact_path(OUTPUTS["team"], ".calibrator.pkl")


def template_reply(c: dict, team: str) -> Optional[str]:
    """The local model's reply: the best article, quoted and cited; no free text of its own."""
    if not c["articles"]:
        return None
    a = c["articles"][0]
    return f"Our {team} team has your ticket {c['ticket']['ticket_id']}. This should help: {a['title']} [{a['id']}]\n\n{a['text']}"


def greeted(reply: str, name: Optional[str]) -> str:
    return f"Hello {name},\n\n{reply}" if name else f"Hello,\n\n{reply}"


class Reasoner:
    def __init__(self, local_model, llm, ledger: Optional[LLMLedger] = None, routing: Optional[RoutingPolicy] = None):
        self.local_model, self.llm = local_model, llm
        self.prompt = load_prompt(PROMPT)
        self.routing = budget_from_env("tickets", routing or ROUTING)
        name = (getattr(llm, "model_name", None) or "llm") if llm.enabled else None
        self.router = Router("tickets", self.routing, price_table(), ledger, name, self.prompt.version)
        self.routed_to_llm = 0

    def reason(self, requests: Sequence[PassRequest]) -> list[Optional[dict]]:
        """A first or low-confidence pass proposes anew (the latter through the LLM); after a
        hard rule took the reply away, the same routing without the reply, if the policy allows it."""
        out: list[Optional[dict]] = [None] * len(requests)
        fresh = [i for i, r in enumerate(requests) if not r.after_rule]
        made = self.propose([requests[i].item for i in fresh], [requests[i].why == LOW_CONFIDENCE for i in fresh])
        for i, p in zip(fresh, made):
            out[i] = p
        for i, r in enumerate(requests):
            if r.after_rule and r.previous is not None and "route" in r.feedback.allowed:
                facts = {**r.previous["facts"], **reply_facts(None, [], [])}
                out[i] = {
                    **r.previous,
                    "decision": "route",
                    "reply": None,
                    "facts": facts,
                    "route_reason": "reply withdrawn",
                }
        return out

    def propose(self, contexts: Sequence[dict], ask_llm: Sequence[bool] = ()) -> list[dict]:
        if not contexts:
            return []
        texts = [{"text": c["local_text"]} for c in contexts]
        preds = {o: self.local_model.predict(name, texts) for o, name in OUTPUTS.items()}
        proposals = [
            self._local(c, {o: (p.labels[i], p.probabilities[i].max()) for o, p in preds.items()})
            for i, c in enumerate(contexts)
        ]
        version = preds["team"].model_version
        kinds = ["quarantined" if c["facts"]["injection_suspected"] else "standard" for c in contexts]
        chosen = for_the_llm(self.router, proposals, kinds, list(ask_llm) or [False] * len(contexts))
        asked = [question(self.prompt, contexts[i]) for i in chosen]
        answers = self.router.ask(asked, chat_answer(self.llm, self.prompt.output_model)) if chosen else []
        self.routed_to_llm += len(chosen)
        for i, r in zip(chosen, answers):
            if (v := answer_onto(proposals[i], r, self.prompt.version)) is not None:
                c, says = contexts[i], (v["team"], v["priority"])
                reply = v["reply"].strip() and v["cited_article"] and greeted(v["reply"], c["customer_name"])
                self._outputs(proposals[i], c, *says, reply or None, float(v["confidence"]))
        for c, p in zip(contexts, proposals):
            p["model_version"] = p.get("model_version") or version
            p["facts"].update(reply_facts(p["reply"], [c["customer_name"] or ""], [a["id"] for a in c["articles"]]))
        return proposals

    def _local(self, c: dict, preds: dict) -> dict:
        (team, pt), (prio, pp), (auto, pa) = preds["team"], preds["priority"], preds["auto_reply"]
        prio = vip_rule(prio, c["facts"]["vip"])
        reply = greeted(template_reply(c, team), c["customer_name"]) if auto == "True" and c["articles"] else None
        passages = [{"doc": a["id"], "heading": a["title"]} for a in c["articles"]]
        p = {
            **{k: c[k] for k in KEPT},
            "context_used": {"sources": c["sources"], "policy_passages": passages},
            "articles": [a["id"] for a in c["articles"]],
            "outputs": {o: round(float(v), 4) for o, v in (("team", pt), ("priority", pp), ("auto_reply", pa))},
            **{"model": "local", "model_version": None, "prompt_version": None, **LOCAL_COSTS},
        }
        return self._outputs(p, c, team, prio, reply, float(pt * pp * pa))

    @staticmethod
    def _outputs(p: dict, c: dict, team: str, priority: str, reply: Optional[str], probability: float) -> dict:
        """The two guarded outputs (team, priority) and the reply, with the facts the policy judges them by."""
        floor = c["facts"]["legal_threat"] and priority != "urgent"
        facts = {**c["facts"], "team_known": team in TEAMS, "priority_below_floor": floor}
        p.update(team=team, priority=priority, reply=reply, probability=probability, facts=facts)
        p["decision"] = "route_and_reply" if reply else "route"
        return p

    def figures(self) -> dict:
        return {**spend_figures(self.router), "routed_to_llm": self.routed_to_llm}


def question(prompt, c: dict) -> Question:
    """Only guarded text goes out: placeholders for personal data, no customer name or email."""
    articles = "\n\n".join(f"[{a['id']}] {a['title']}: {a['text']}" for a in c["articles"])
    customer = json.dumps(
        {k: c["customer"].get(k) for k in ("tier", "vip", "contract", "open_invoices")}, sort_keys=True
    )
    text = prompt.render(
        ticket=c["text"], customer=customer, history=c["history"] or "none", articles=articles or "none"
    )
    return Question(key=c["key"], messages=[{"role": "user", "content": text}], inputs=text)


def read_more(llm_enabled: bool, index: Callable[[], object], k: int):
    """The loop's `read_more`: a broader article search, for the LLM to read (without an LLM
    nothing new would be asked, so nothing more is read)."""
    from assets.tickets.context import attach_articles

    def more(items: Sequence[dict], proposals: Sequence[dict]) -> list[Optional[dict]]:
        if not llm_enabled:
            return [None for _ in items]
        wider = [dict(i) for i in items]
        attach_articles(wider, index(), k)
        return wider

    return more


def load_calibrator(local_model) -> Calibrator:
    return Calibrator.load(calibrator_path(local_model))
