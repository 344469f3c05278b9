"""Decision layer of the invoice workflow: the engine's decision loop
(orchestration/decision/loop.py) with the invoice's hooks: `Reasoner.reason` (the local
model, the LLM through the router, the LLM told a violated rule), `judge` (the policy's
guardrails, the calibrator, the invoice's confidence factors) and `more_context` (the ERP
and the policies read again for an invoice the loop is unsure of)."""

from functools import lru_cache
from typing import Callable, Optional, Union

from assets.invoices.confidence import factors
from assets.invoices.erp import ERPResource
from assets.invoices.more_context import more_context
from assets.invoices.reasoning import Reasoner
from assets.invoices.workflow import ASK_FOR_CONTEXT_THRESHOLD, DECISION_LOOP, MODEL_NAME, WORKFLOW
from guardrails.engine import Policy, load_policy
from orchestration.context.tokens import TokenCounter, counter_for, reader_model
from orchestration.core.batch_assets import StepCall
from orchestration.decision.batch import DecisionSpec, decide_batch, env_limit_overrides
from orchestration.decision.confidence import Calibrator, Thresholds
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.loop import LoopBounds
from orchestration.decision.prompts import Prompt
from orchestration.decision.routing import RoutingPolicy
from resources.chat_model import ChatModel
from resources.context_sources import ContextSources
from resources.knowledge_base import PolicyIndex
from resources.local_model import LocalModel


@lru_cache(maxsize=1)
def invoice_policy() -> Policy:
    return load_policy(WORKFLOW)


def calibrator_path(local_model: LocalModel):
    return local_model.artifact_path(f"{MODEL_NAME}-calibrator")


def decision_spec(policy: Optional[Policy] = None, bounds: LoopBounds = DECISION_LOOP) -> DecisionSpec:
    """How the engine's decision loop judges an invoice: the policy's guardrails, the
    invoice's confidence factors, the amount a proposal states."""
    policy = policy or invoice_policy()
    return DecisionSpec(
        policy=policy,
        thresholds=Thresholds(act=policy.confidence_threshold, ask=ASK_FOR_CONTEXT_THRESHOLD),
        bounds=bounds,
        acting={"approve"},
        factors=factors,
        stated=lambda p: {"amount": p.get("stated_amount")},
        # BOSUN_INVOICES_GUARDRAIL_LIMITS may tighten the policy's dynamic limits, never loosen them.
        limit_overrides=env_limit_overrides(WORKFLOW),
    )


def decide(
    contexts: list[dict],
    local_model: LocalModel,
    llm: ChatModel,
    ledger: Optional[LLMLedger] = None,
    index: Union[PolicyIndex, Callable[[], PolicyIndex], None] = None,
    calibrator: Optional[Calibrator] = None,
    routing: Optional[RoutingPolicy] = None,
    erp: Optional[ERPResource] = None,
    sources: Optional[ContextSources] = None,
    prompt: Optional[Prompt] = None,
    counter: Optional[TokenCounter] = None,
    seconds: Optional[dict[str, float]] = None,
    reasoner: Optional[Reasoner] = None,
) -> list[dict]:
    """Decide a batch with the engine's decision loop and the invoice's hooks: without `erp`
    a low-confidence invoice's sources are not re-read, without `index` its policies are not
    (benchmarks, replay)."""
    reasoner = reasoner or Reasoner(local_model, llm, ledger, routing, prompt)
    calibrator = calibrator or Calibrator.load(calibrator_path(local_model))
    more = more_context(index, erp, sources, counter)
    return decide_batch(contexts, reasoner.reason, decision_spec(), calibrator, more, seconds)


# ---- the batch step ------------------------------------------------------------------


def decide_step(call: StepCall, contexts: list[dict], seconds: dict) -> list[dict]:
    """The batch step of the decision layer (orchestration/core/batch_assets.py). It reads the
    promoted model and its calibrator through the `local_model` resource (the model and
    calibrator assets are its inputs in the lineage only)."""
    r = call.resources
    calibrator = Calibrator.load(calibrator_path(r["local_model"]))
    reasoner = Reasoner(r["local_model"], r["llm"], r["bosun_db"].llm_ledger())
    # The broader search builds its own index from the documents (milliseconds for a policy
    # set), and only when a decision asks: loading the policy_index asset into every batch
    # run would cost more than the rare re-read.
    decisions = decide(
        contexts,
        r["local_model"],
        r["llm"],
        index=lambda: PolicyIndex(r["policy_documents"].load()),
        calibrator=calibrator,
        erp=r["erp"],
        sources=r["context_sources"],
        counter=counter_for(reader_model(r["llm"])),
        seconds=seconds,
        reasoner=reasoner,
    )
    call.metadata.update({**reasoner.figures(), "calibrator_version": calibrator.version})
    return decisions


DECISION_RESOURCES = frozenset({"local_model", "llm", "erp", "context_sources", "policy_documents"})
