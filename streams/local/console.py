"""Output for humans: rich widgets on a terminal, plain lines everywhere else."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressSink(Protocol):
    """What long-running jobs report progress to."""

    def advance(self, amount: int, note: str = "") -> None:
        """Count `amount` more units done."""


class Reporter:
    """Prints results and progress; live widgets only when stdout is a TTY."""

    def __init__(self, *, interactive: bool | None = None, to_stderr: bool = False) -> None:
        self._to_stderr = to_stderr  # lines to stderr: stdout is kept for a JSON result
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self._console = Console(highlight=False, soft_wrap=True) if self.interactive else None

    def line(self, text: str) -> None:
        """One plain line (markup only on a terminal)."""
        if self._console is not None:
            self._console.print(text)
        else:
            print(text, file=sys.stderr if self._to_stderr else sys.stdout, flush=True)

    def error(self, text: str) -> None:
        """A line on stderr."""
        print(text, file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressSink]:
        """A progress bar on a terminal; periodic plain lines otherwise."""
        if self._console is None:
            yield _PlainProgress(self, description, total)
            return
        columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        columns += [TextColumn("{task.completed:,}/{task.total:,}"), TimeRemainingColumn()]
        columns += [TextColumn("{task.fields[note]}")]
        with Progress(*columns, console=self._console, transient=False) as bar:
            task = bar.add_task(description, total=total, note="")
            yield _RichProgress(bar, task)


class _RichProgress:
    def __init__(self, bar: Progress, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, amount: int, note: str = "") -> None:
        self._bar.update(self._task, advance=amount, note=note)


class _PlainProgress:
    """Prints a line each time another tenth of the total is reached (or on a note)."""

    def __init__(self, reporter: Reporter, description: str, total: int | None) -> None:
        self._reporter = reporter
        self._description = description
        self._total = total
        self._done = 0
        self._next_mark = 0.1

    def advance(self, amount: int, note: str = "") -> None:
        self._done += amount
        if self._total:
            fraction = self._done / self._total
            if fraction + 1e-12 < self._next_mark:
                return
            while self._next_mark <= fraction:
                self._next_mark += 0.1
            self._reporter.line(
                f"{self._description}: {self._done:,}/{self._total:,} ({fraction:.0%}) {note}"
            )
        elif note:
            self._reporter.line(f"{self._description}: {self._done:,} {note}")
