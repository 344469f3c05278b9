"""What every `bosun` command shares: JSON on stdout, errors and progress on stderr, and
Bosun's own tables without the code location.

stdout carries the answer only (JSON for every command that has `--json` or prints JSON),
so `bosun ... | jq` always works; messages, warnings and progress bars go to stderr, and an
error exits non-zero. Progress bars are rich's, on stderr: on a terminal they animate; in a
log they print their final line once.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

from orchestration.core import settings


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def fail(message: str, code: int = 1) -> int:
    """An error for a person, on stderr; the exit code to return."""
    print(f"bosun: {message}", file=sys.stderr)
    return code


class Stores:
    """Bosun's own tables (inbox, audit log, dead letters, review queue) at BOSUN_DATABASE_URL,
    or the embedded SQLite file: the same URL the `bosun_db` resource resolves, reached
    without importing the code location (Dagster, the workflows, scikit-learn)."""

    def __init__(self, url: Optional[str] = None):
        self.resolved_url = url or settings.database_url()

    def inbox(self):
        from orchestration.trigger.inbox import Inbox

        return Inbox(self.resolved_url)

    def audit(self):
        from orchestration.audit.chain import AuditLog

        return AuditLog(self.resolved_url)

    def dead_letters(self):
        from orchestration.trigger.dead_letters import DeadLetters

        return DeadLetters(self.resolved_url)

    def review_queue(self):
        from orchestration.review.queue import ReviewQueue

        return ReviewQueue(self.resolved_url)


class Progress:
    """Stages, each a bar (when its total is known) or a spinner, on stderr.

    `stage(description, total)` finishes the current stage and starts the next;
    `advance(n)` moves the current bar. Engine code takes any object with these two methods
    (or None), so it never imports rich."""

    def __init__(self, progress):
        self._progress = progress
        self._task = None

    def stage(self, description: str, total: Optional[int] = None) -> None:
        self._finish()
        self._task = self._progress.add_task(description, total=total, counted=total is not None)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def _finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, total=task.completed or 1, completed=task.completed or 1)


@contextmanager
def progress() -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class Count(ProgressColumn):  # "n/total" on counted stages only; a spinner stage has no total
        def render(self, task):
            return Text(f"{int(task.completed)}/{int(task.total)}" if task.fields.get("counted") else "")

    console = Console(stderr=True)
    if not console.is_terminal:  # a log: one line per stage, not cut at 80 columns
        console = Console(stderr=True, width=160)
    bar = RichProgress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        Count(),
        TimeElapsedColumn(),
        console=console,
    )
    reporter = Progress(bar)
    with bar:
        try:
            yield reporter
        finally:
            reporter._finish()


@contextmanager
def step(description: str) -> Iterator[None]:
    """One step of unknown length (loading the code location, say) as a spinner on stderr."""
    with progress() as p:
        p.stage(description)
        yield
