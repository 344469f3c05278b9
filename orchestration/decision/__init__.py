"""The decision layer: confidence and calibration, model routing and the LLM ledger, prices, versioned prompts, the decision loop, model quality and feedback rows, guardrail checks."""
