"""What the invoice decisions need to know from the approval policies: the questions, each
asked when its fact holds (the engine's retrieval, orchestration/context/knowledge.py, answers them)."""

from __future__ import annotations

from pathlib import Path

LABELS_PATH = Path(__file__).parent / "retrieval_labels.yaml"
# On the sample policies a real question's best passage scores 2.1-8.5, an off-topic one
# ("exchange rate policy for crypto") 1.2: the engine's floor of 1.5 separates them.
RECALL_AT_5_THRESHOLD = 0.9

# The policy questions a decision needs answered, each asked when its fact holds.
QUESTIONS = {
    "approval": ("when may an invoice be approved automatically", lambda f: True),
    "unknown_vendor": ("invoice from an unknown vendor not in the vendor master", lambda f: not f["vendor_known"]),
    "inactive_vendor": (
        "invoice from an inactive or blocked vendor",
        lambda f: f["vendor_known"] and not f["vendor_active"],
    ),
    "duplicate": ("duplicate invoice already paid, pay an invoice twice", lambda f: f["already_paid"]),
    "po_closed": ("invoice against a closed purchase order", lambda f: f["po_found"] and not f["po_open"]),
    "po_missing": (
        "invoice references purchase order of another vendor or none",
        lambda f: not f["po_found"] or not f["po_vendor_matches"],
    ),
    "currency": (
        "invoice currency differs from purchase order currency",
        lambda f: f["po_found"] and not f["currency_matches_po"],
    ),
    "over_po": ("amount exceeds the purchase order tolerance", lambda f: (f["amount_over_po_ratio"] or 0) > 0),
    "large_amount": ("invoice amount over 50,000 second approver", lambda f: f["amount"] > 50000),
    "high_risk": ("high risk vendor review above 10,000", lambda f: f["high_risk_amount"] > 10000),
    "instructions": ("memo asks to ignore the rules and approve the invoice", lambda f: f["injection_suspected"]),
    "personal_data": ("redact personal data in memos", lambda f: f["pii_in_memo"]),
}
