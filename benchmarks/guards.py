"""Input guards measured on labelled corpora: PII recall and false redaction per type, prompt
injection detection and false quarantine, and what the guards cost per text.

Corpora (tests/guardrails/corpora/):
- pii.jsonl: personal data to redact (IBAN, card, email, phone, address, person) beside
  look-alikes that must stay readable (dates, order and reference numbers, amounts, postal
  codes, VAT ids), in seven languages;
- injection_attacks.txt: attacks in ten languages, encoded and disguised;
- harmless_notes.txt: accounts-payable notes that look alarming and are not.

Baseline, in the same run: the four plain regexes the guard used before (no checksum, no
parser), on the same corpus and the same texts, for rates and for time.

    python benchmarks/guards.py [--repeat 20] [--json]

Exit 1 when an acceptance goal is missed: recall >= 0.95 for IBAN, card, email and phone;
false redaction of look-alikes <= 2 %; false quarantine of harmless notes <= 5 %.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPORA = ROOT / "tests" / "guardrails" / "corpora"

from guardrails import pii  # noqa: E402
from guardrails.input_guards import _guarded, injection_signals  # noqa: E402

CHECKED_TYPES = ("iban", "card", "email", "phone")
GOALS = {"recall": 0.95, "lookalike_false_redaction": 0.02, "false_quarantine": 0.05}

# The detector before: four regexes, no checksum, no parser (what main had until 2026-11-30).
BASELINE = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "card": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    "phone": re.compile(r"(?<!\w)\+?\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
}


def baseline_spans(text: str) -> list[pii.PiiSpan]:
    """Spans as the old sequential substitution redacted them (each pattern on what the last left)."""
    spans: list[pii.PiiSpan] = []
    for kind, pattern in BASELINE.items():
        for m in pattern.finditer(text):
            if all(m.end() <= s.start or m.start() >= s.end for s in spans):
                spans.append(pii.PiiSpan(kind, m.start(), m.end()))
    return spans


def load_pii() -> list[dict]:
    return [json.loads(line) for line in (CORPORA / "pii.jsonl").read_text(encoding="utf-8").splitlines() if line]


def load_lines(name: str) -> list[str]:
    return [x for x in (CORPORA / name).read_text(encoding="utf-8").splitlines() if x and not x.startswith("#")]


def _where(text: str, value: str) -> tuple[int, int]:
    at = text.find(value)
    return at, at + len(value)


def _covered(spans: list[pii.PiiSpan], start: int, end: int, kind: str | None) -> bool:
    """Every character of [start, end) (whitespace aside) lies in a span (of `kind`, if given)."""
    chars = [i for i in range(start, end)]
    return all(any(s.start <= i < s.end and (kind is None or s.kind == kind) for s in spans) for i in chars)


def _touched(spans: list[pii.PiiSpan], start: int, end: int) -> bool:
    return any(s.start < end and start < s.end for s in spans)


def pii_rates(items: list[dict], finder) -> dict:
    per_type: dict[str, dict] = {}
    per_lookalike: dict[str, dict] = {}
    misses, false_redactions = [], []
    for item in items:
        text = item["text"]
        spans = finder(text)
        labelled = [(e["type"], *_where(text, e["value"])) for e in item["pii"]]
        for kind, start, end in labelled:
            row = per_type.setdefault(kind, {"labelled": 0, "found": 0, "false_detections": 0})
            row["labelled"] += 1
            if _covered(spans, start, end, kind):
                row["found"] += 1
            else:
                misses.append({"id": item["id"], "type": kind, "value": text[start:end]})
        for s in spans:
            # A detection that overlaps no labelled value of its own type is a false one.
            if not any(k == s.kind and s.start < e and b < s.end for k, b, e in labelled):
                per_type.setdefault(s.kind, {"labelled": 0, "found": 0, "false_detections": 0})["false_detections"] += 1
        for e in item["lookalikes"]:
            start, end = _where(text, e["value"])
            row = per_lookalike.setdefault(e["type"], {"n": 0, "redacted": 0})
            row["n"] += 1
            if _touched(spans, start, end):
                row["redacted"] += 1
                false_redactions.append(
                    {
                        "id": item["id"],
                        "type": e["type"],
                        "value": e["value"],
                        "as": sorted({s.kind for s in spans if s.start < end and start < s.end}),
                    }
                )
    n_lookalikes = sum(r["n"] for r in per_lookalike.values())
    for row in per_type.values():
        row["recall"] = round(row["found"] / row["labelled"], 4) if row["labelled"] else None
        row["false_positive_rate"] = round(row["false_detections"] / n_lookalikes, 4) if n_lookalikes else None
    for row in per_lookalike.values():
        row["rate"] = round(row["redacted"] / row["n"], 4)
    redacted = sum(r["redacted"] for r in per_lookalike.values())
    return {
        "items": len(items),
        "per_type": dict(sorted(per_type.items())),
        "lookalikes": dict(sorted(per_lookalike.items())),
        "lookalike_false_redaction": round(redacted / n_lookalikes, 4) if n_lookalikes else None,
        "misses": misses,
        "false_redactions": false_redactions,
    }


def injection_rates(attacks: list[str], harmless: list[str]) -> dict:
    caught = [a for a in attacks if injection_signals(a)]
    quarantined = [h for h in harmless if injection_signals(h)]
    return {
        "attacks": len(attacks),
        "detected": len(caught),
        "detection_rate": round(len(caught) / len(attacks), 4),
        "missed": [a for a in attacks if a not in caught],
        "harmless": len(harmless),
        "quarantined": len(quarantined),
        "false_quarantine_rate": round(len(quarantined) / len(harmless), 4),
        "false_quarantines": quarantined,
    }


def timing(texts: list[str], repeat: int) -> dict:
    def per_text(fn) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(repeat):
                for t in texts:
                    fn(t)
            best = min(best, time.perf_counter() - started)
        return best / (repeat * len(texts)) * 1e6

    redact_only = per_text(pii.redact)
    guard = per_text(_guarded.__wrapped__)  # uncached: what a text never seen before costs
    base = per_text(lambda t: [p.sub("[X]", t) for p in BASELINE.values()])
    return {
        "texts": len(texts),
        "repeat": repeat,
        "baseline_regex_us_per_text": round(base, 2),
        "pii_redact_us_per_text": round(redact_only, 2),
        "guard_text_us_per_text": round(guard, 2),
        "pii_redact_vs_baseline": round(redact_only / base, 1),
        "guard_text_vs_baseline": round(guard / base, 1),
    }


def run(repeat: int) -> dict:
    items = load_pii()
    attacks, harmless = load_lines("injection_attacks.txt"), load_lines("harmless_notes.txt")
    out = {
        "coverage": pii.coverage(),
        "pii": pii_rates(items, pii.find_pii),
        "pii_baseline": pii_rates(items, baseline_spans),
        "injection": injection_rates(attacks, harmless),
        "time": timing([it["text"] for it in items] + attacks + harmless, repeat),
    }
    p, inj = out["pii"], out["injection"]
    out["goals_met"] = {
        **{f"recall_{k}": (p["per_type"].get(k, {}).get("recall") or 0) >= GOALS["recall"] for k in CHECKED_TYPES},
        "lookalike_false_redaction": p["lookalike_false_redaction"] <= GOALS["lookalike_false_redaction"],
        "false_quarantine": inj["false_quarantine_rate"] <= GOALS["false_quarantine"],
    }
    return out


def _print(out: dict) -> None:
    p, b = out["pii"], out["pii_baseline"]
    print(
        f"PII corpus: {p['items']} items "
        f"({sum(r['labelled'] for r in p['per_type'].values())} personal data, "
        f"{sum(r['n'] for r in p['lookalikes'].values())} look-alikes)"
    )
    print(
        f"{'type':10} {'n':>4} {'recall':>7} {'false det.':>10} {'FP rate':>8}   {'baseline recall':>15} {'FP rate':>8}"
        "   coverage"
    )
    for kind in pii.PII_TYPES:
        r, br = p["per_type"].get(kind), b["per_type"].get(kind, {})
        if r is None:
            continue
        fmt = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"{kind:10} {r['labelled']:>4} {fmt(r['recall']):>7} {r['false_detections']:>10} "
            f"{fmt(r['false_positive_rate']):>8}   {fmt(br.get('recall')):>15} {fmt(br.get('false_positive_rate')):>8}"
            f"   {out['coverage'][kind]}"
        )
    print(
        f"look-alikes falsely redacted: {p['lookalike_false_redaction']:.3f} (baseline {b['lookalike_false_redaction']:.3f})"
    )
    for kind, r in p["lookalikes"].items():
        print(
            f"  {kind:13} {r['redacted']:>3}/{r['n']:<4} {r['rate']:.3f}   baseline {b['lookalikes'][kind]['rate']:.3f}"
        )
    for m in p["misses"]:
        print(f"  missed   #{m['id']:<4} {m['type']:8} {m['value']}")
    for f in p["false_redactions"]:
        print(f"  redacted #{f['id']:<4} {f['type']:13} {f['value']} as {','.join(f['as'])}")
    i = out["injection"]
    print(
        f"injection: attacks detected {i['detected']}/{i['attacks']} = {i['detection_rate']:.3f}; "
        f"harmless notes quarantined {i['quarantined']}/{i['harmless']} = {i['false_quarantine_rate']:.3f}"
    )
    for a in i["missed"]:
        print(f"  missed      {a[:100]}")
    for h in i["false_quarantines"]:
        print(f"  quarantined {h[:100]}")
    t = out["time"]
    print(
        f"time per text: baseline regex {t['baseline_regex_us_per_text']} us, PII redaction "
        f"{t['pii_redact_us_per_text']} us ({t['pii_redact_vs_baseline']}x), whole guard (PII + injection) "
        f"{t['guard_text_us_per_text']} us ({t['guard_text_vs_baseline']}x), {t['texts']} texts x {t['repeat']}"
    )
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in out["goals_met"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20, help="passes over the corpora for the timing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args.repeat)
    if args.json:
        print(json.dumps(out, indent=1, ensure_ascii=False))
    else:
        _print(out)
    return 0 if all(out["goals_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
