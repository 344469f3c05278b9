"""The code location loads, and dependencies point down."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load_with_every_workflow_piece():
    from orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "vendors",
        "purchase_orders",
        "policy_index",
        "invoice_context",
        "invoice_decisions",
        "invoice_actions",
    } <= keys
    assert defs.resolve_sensor_def("invoice_inbox_sensor")
    schedule = defs.resolve_schedule_def("invoice_context_refresh_daily")
    assert schedule.execution_timezone == "Europe/Berlin"
    checks = {c.name for c in graph.asset_check_keys}
    assert checks == {
        "every_event_reached_a_terminal_state",
        "no_invoice_paid_twice",
        "no_payment_exceeds_po",
        "retrieval_recall_at_5_meets_threshold",
        "calibration_error_is_below_limit",
        "hard_guardrails_held",
        "no_soft_flagged_decision_acted_on_unreviewed",
        "dead_letters_within_limits",
        "ledger_matches_payments",
        "retrained_model_is_not_worse",
        "decisions_reconcile_with_saga_log_and_erp",
        "context_meets_expectations",
        "outcomes_meet_expectations",
        "payments_settled_by_due_date",
        "tick_messages_delivered",
        "no_late_bounces",
        # The ticket workflow's own (its standard checks share the names above).
        "ticket_kb_index_recall_at_3",
        "tickets_reconcile_with_saga_log_and_helpdesk",
        "no_ticket_assigned_twice",
        "every_sent_reply_cites_an_article",
        "ticket_reopens_within_limit",
    }
    assert {"ticket_inbox", "ticket_kb_index", "ticket_crm_snapshot", "ticket_context", "ticket_actions"} <= keys
    assert "outbox_deliveries" in keys and defs.resolve_sensor_def("outbox_relay")
    assert {"invoice_feedback", "invoice_model_candidate", "invoice_local_model", "invoice_decision_report"} <= keys
    assert defs.resolve_sensor_def("invoice_feedback_sensor")
    assert defs.resolve_schedule_def("invoice_decision_report_daily").execution_timezone == "Europe/Berlin"


def test_dagster_definitions_validate_passes_on_the_workspace(tmp_path):
    """What an operator (and `dg check defs`) runs: Dagster's own validation of the workspace the
    webserver and the daemon load, in a fresh process and instance."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "BOSUN_HOME": str(tmp_path / "bosun")}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


# Loaded when a step runs, never by loading the code location: the code server (its RSS),
# `dagster definitions validate` and every run worker load it, and defining the assets needs
# none of them (~0.65 s and ~70 MiB together).
# The data libraries, the HTTP client (with the rich and pygments its CLI pulls in, ~7 MiB per
# process: only a webhook send needs it) and the holiday tables (~3 MiB: only a schedule's tick
# asks about a day), none of which the code location or a batch run needs to load.
HEAVY = ("pandas", "numpy", "scipy", "bm25s", "sklearn", "httpx", "holidays")

# Run in a fresh interpreter: records which of the repository's lines first imported each
# heavy module (a library such as joblib may import numpy on its behalf).
_FIRST_IMPORTER_PROBE = """
import json, sys, traceback
heavy, repo = sys.argv[1].split(","), sys.argv[2]
first = {}
class Spy:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in first:
            ours = [f for f in traceback.extract_stack() if f.filename.startswith(repo)]
            first[top] = f"{ours[-1].filename[len(repo):]}:{ours[-1].lineno}" if ours else "?"
        return None
sys.meta_path.insert(0, Spy())
import orchestration.definitions
if sys.argv[3:] == ["sensors"]:  # then one tick of every sensor, on an empty instance and database
    import dagster as dg
    defs = orchestration.definitions.defs
    with dg.instance_for_test() as instance:
        for sensor in defs.get_repository_def().sensor_defs:
            with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as ctx:
                sensor.evaluate_tick(ctx)
json.dump({m: first.get(m, "?") for m in heavy if m in sys.modules}, sys.stdout)
"""


def _first_importers(tmp_path, *then: str) -> dict[str, str]:
    # Embedded defaults only: a sensor tick on a database or outbox the suite's other tests share
    # could act on their rows (the outbox relay would send their messages).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_"))}
    env.update(DAGSTER_HOME=str(tmp_path), BOSUN_HOME=str(tmp_path / "bosun"))
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_IMPORTER_PROBE, ",".join(HEAVY), f"{REPO}/", *then],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_loading_the_code_location_imports_no_data_library(tmp_path):
    loaded = _first_importers(tmp_path)
    assert loaded == {}, (
        "importing orchestration.definitions loads "
        + ", ".join(f"{m} (first imported by {where})" for m, where in loaded.items())
        + ": those modules should import it inside the functions that use it (annotations under "
        "`if TYPE_CHECKING:`), so the code server, validation and run workers load without it"
    )


def test_a_tick_of_every_sensor_imports_no_data_library(tmp_path):
    # The code server evaluates the sensors and lives as long as the deployment: what a tick
    # imports stays in its memory (pandas alone ~45 MiB), while no sensor reads a frame.
    loaded = _first_importers(tmp_path, "sensors")
    assert loaded == {}, "a sensor tick loads " + ", ".join(f"{m} (first imported by {w})" for m, w in loaded.items())


def test_context_assets_carry_freshness_policies():
    from assets.invoices import context_assets

    for a in context_assets:
        for spec in a.specs:
            assert spec.freshness_policy is not None, spec.key


def _imports(path: Path, depth: int = 1) -> set[str]:
    """The modules a file imports, cut to their first `depth` dotted parts."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {".".join(a.name.split(".")[:depth]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(".".join(node.module.split(".")[:depth]))
            if node.module == "orchestration" and depth == 2:  # `from orchestration import cli`
                names |= {f"orchestration.{a.name}" for a in node.names}
    return names


# The engine, grouped by layer; the CLI and the HTTP API are entry points beside it.
ENGINE = ("core", "trigger", "context", "decision", "action", "verification", "review", "audit")
ENTRY = ("cli", "api")


def test_dependencies_point_down():
    """The engine never imports workflows, triggers or resources, nor the CLI or the API;
    guardrails, resources and the trigger builders never import a workflow. Only the entry
    points (definitions.py, the CLI, the API) assemble everything."""
    forbidden = {
        "guardrails": {"assets", "sensors", "resources"},
        "resources": {"assets", "sensors"},
        # The trigger builders are the engine's: a workflow's folder uses them, never the reverse.
        "sensors": {"assets"},
    }
    offenders = []
    for package, banned in forbidden.items():
        for path in (REPO / package).rglob("*.py"):
            bad = _imports(path) & banned
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    engine_banned = {"assets", "sensors", "resources", "orchestration.definitions"}
    engine_banned |= {f"orchestration.{e}" for e in ENTRY}
    for layer in ENGINE:
        for path in (REPO / "orchestration" / layer).rglob("*.py"):
            bad = (_imports(path) | _imports(path, depth=2)) & engine_banned
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert offenders == []
    # Every engine module sits in a layer's package: nothing loose beside definitions.py.
    loose = {p.name for p in (REPO / "orchestration").glob("*.py")} - {"__init__.py", "definitions.py"}
    assert loose == set()


def test_the_lineage_is_one_graph_per_workflow_from_its_inbox_through_the_layers():
    from orchestration.core.lineage import LAYERS
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    invoice_keys = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name.startswith("invoices_")}
    # Connected: every invoice asset is reached from the inbox, walking edges either way.
    seen, todo = set(), [dg.AssetKey("invoice_inbox")]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        node = graph.get(key)
        todo += [k for k in (*node.parent_keys, *node.child_keys) if k in invoice_keys]
    assert seen == invoice_keys
    assert graph.get(dg.AssetKey("invoice_inbox")).parent_keys == set()
    groups = {graph.get(k).group_name for k in invoice_keys}
    assert groups == {f"invoices_{layer}" for layer in LAYERS}

    def layer(name):
        return graph.get(dg.AssetKey(name)).group_name.removeprefix("invoices_")

    # The trigger -> context -> decision -> action -> verification chain, edge by edge.
    chain = ["invoice_inbox", "invoice_context", "invoice_decisions", "invoice_actions", "erp_payments"]
    for up, down in zip(chain, chain[1:]):
        assert dg.AssetKey(up) in graph.get(dg.AssetKey(down)).parent_keys
    assert [layer(k) for k in chain] == ["trigger", "context", "decision", "action", "action"]
    assert {"erp_payments"} == {k.to_user_string() for k in graph.get(dg.AssetKey("payment_settlements")).parent_keys}
    assert dg.AssetKey("invoice_local_model") in graph.get(dg.AssetKey("invoice_decisions")).parent_keys
