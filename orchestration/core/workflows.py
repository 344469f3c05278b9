"""A workflow's declaration, and discovery of every workflow the code location ships.

Each package under `assets/` that exposes a module-level `workflow` (a `Workflow`) is one
workflow. Everything the code location, the CLI and the HTTP API know about it is read from
that one object: its Dagster definitions (assets, checks, jobs, sensors, schedules, resources),
its payload models, its saga, review and replay hooks, its notification routing and the
schemas of the target systems it owns. Adding a workflow is adding a folder: no engine, CLI
or API file lists workflows.

The engine never imports a workflow by name (the dependency test forbids it): discovery
imports the packages it finds under `assets/` by their path.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import dagster as dg

from orchestration.core.schema_migrations import SchemaOwner
from orchestration.review.hooks import ReviewHooks
from orchestration.trigger.envelope import PayloadRegistry


class SagaHooks(Protocol):
    """What `bosun saga ...`, the recovery sensor and an approved review need to run and record
    the workflow's sagas (a module with these two functions is one)."""

    def saga_executor(self, resources: Mapping[str, Any], holder: str) -> Any: ...

    def record_settled(self, resources: Mapping[str, Any], outcome: Any, note: str) -> int: ...


@dataclass(frozen=True)
class TargetSchema:
    """A table set with migrations that the workflow's target system owns, and the resource
    whose database holds it (for `bosun db upgrade|current|check`)."""

    owner: SchemaOwner
    resource_key: str


@dataclass(frozen=True)
class SampleHooks:
    """What `bosun demo|sample-data|dev` run for a workflow that ships a sample generator."""

    prepare: Callable[..., dict]  # (resources, directory, n_events, seed, progress): sample, targets, model
    prepared: Callable[..., bool]  # (resources, directory): can `bosun dev` start without `prepare`?
    run_demo: Callable[..., dict]  # (defs, home, n_events, seed, progress): the whole path in-process
    feed_chunk: Optional[Callable[..., dict]] = None  # `bosun dev`'s living feed


@dataclass(frozen=True)
class Workflow:
    """One workflow, declared once."""

    name: str
    event_types: Sequence[str]
    register_payloads: Callable[[PayloadRegistry], None]
    assets: Sequence[Any] = ()
    asset_checks: Sequence[Any] = ()
    jobs: Sequence[Any] = ()
    sensors: Sequence[dg.SensorDefinition] = ()
    schedules: Sequence[dg.ScheduleDefinition] = ()
    # Resources only this workflow uses (its target systems), merged into the location's.
    resources: Mapping[str, Any] = field(default_factory=dict)
    sagas: Optional[SagaHooks] = None
    reviews: Optional[ReviewHooks] = None  # what a reviewer's answer means (orchestration/review/hooks.py)
    replay: Optional[Callable[..., Any]] = None
    notification_routing: Optional[Path] = None  # the outbox relay's channels and templates
    target_schemas: Sequence[TargetSchema] = ()
    sample: Optional[SampleHooks] = None

    def definitions(self) -> dg.Definitions:
        """The workflow's Dagster objects; its `resources` are merged by the code location with
        everyone's (a test or the environment may replace any of them)."""
        return dg.Definitions(
            assets=list(self.assets),
            asset_checks=list(self.asset_checks),
            jobs=list(self.jobs),
            sensors=list(self.sensors),
            schedules=list(self.schedules),
        )


def asset_job(workflow: str, name: str, assets: Sequence[Any], description: str) -> dg.UnresolvedAssetJobDefinition:
    """A job over one group of a workflow's assets (its context refresh, calibration, feedback
    loop, report, a daily check): in the run's own process, as these are a few short steps and a
    process per step would cost more than the steps, tagged with the workflow it belongs to."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*assets),
        executor_def=dg.in_process_executor,
        tags={"bosun/workflow": workflow},
        description=description,
    )


def lazy(module: str, name: str) -> Callable[..., Any]:
    """A callable that imports `module` on its first call: hooks that need heavy imports
    (training, sample generators) stay out of the code location's load."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


WORKFLOW_PACKAGE = "assets"


def workflow_packages() -> list[str]:
    """`assets`, then the packages BOSUN_WORKFLOW_PACKAGES names (comma-separated): a team's
    workflows kept outside this repository are found the same way."""
    extra = [p.strip() for p in os.environ.get("BOSUN_WORKFLOW_PACKAGES", "").split(",") if p.strip()]
    return [WORKFLOW_PACKAGE, *extra]


def discover(packages: Optional[Sequence[str]] = None) -> dict[str, Workflow]:
    """Every `workflow` declared by a sub-package of each package, by name, in name order."""
    found: dict[str, Workflow] = {}
    for package in packages if packages is not None else workflow_packages():
        root = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
            if not info.ispkg:
                continue
            module = importlib.import_module(f"{package}.{info.name}")
            declared = getattr(module, "workflow", None)
            if not isinstance(declared, Workflow):
                continue
            if declared.name in found:
                raise ValueError(f"two workflows are named {declared.name!r} ({package}.{info.name} and another)")
            found[declared.name] = declared
    return dict(sorted(found.items()))


def payload_registry(workflows: Mapping[str, Workflow]) -> PayloadRegistry:
    """Every workflow's payload models, for triggers that accept any event (CLI, HTTP)."""
    registry = PayloadRegistry()
    for wf in workflows.values():
        wf.register_payloads(registry)
    return registry


def select(workflows: Mapping[str, Workflow], name: Optional[str], what: str) -> list[Workflow]:
    """The named workflow, or all of them when no name is given; a clear error otherwise."""
    if name is None:
        return list(workflows.values())
    if name not in workflows:
        raise KeyError(f"unknown workflow {name!r} for {what}; known: {', '.join(workflows) or 'none'}")
    return [workflows[name]]


def select_with_sample(workflows: Mapping[str, Workflow], name: Optional[str], what: str) -> list[Workflow]:
    """`select` among the workflows that ship a sample (what demo, sample-data and dev run)."""
    return select({n: wf for n, wf in workflows.items() if wf.sample}, name, what)
