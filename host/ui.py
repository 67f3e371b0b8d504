"""Output for people and programs: tables, JSON, sizes, a progress line, error lines.

Tables and JSON go to stdout; progress and errors to stderr, so ``--json`` output stays
clean for a program reading it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = [
    "Progress",
    "error",
    "human_size",
    "one_line",
    "print_json",
    "print_table",
    "render_table",
    "warn",
]

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(n: int | float | None) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB``, ``252 GiB`` (binary units); ``-`` for None."""
    if n is None:
        return "-"
    if n < 0:
        return "-" + human_size(-n)
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            if value >= 100:
                return f"{value:.0f} {unit}"
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    return f"{human_size(bytes_per_second)}/s"


def one_line(text: str) -> str:
    """text with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned with two spaces between them. A row shorter than the header ends with
    free text: its last cell spans the remaining columns and does not widen them."""
    ncols = len(headers)
    widths = [len(h) for h in headers]
    for row in rows:
        fixed = len(row) if len(row) >= ncols else len(row) - 1
        for i, cell in enumerate(row[: min(fixed, ncols)]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = list(row)
        out = [cell.ljust(widths[i]) if i < ncols else cell for i, cell in enumerate(cells[:-1])]
        out.append(cells[-1] if cells else "")
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], stream: TextIO | None = None
) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(render_table(headers, rows) + "\n")
    out.flush()


def print_json(value: Any, stream: TextIO | None = None) -> None:
    """value as indented JSON and a newline."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(value, indent=2) + "\n")
    out.flush()


def error(message: str, stream: TextIO | None = None) -> None:
    """``error: message`` on one line of stderr."""
    out = stream if stream is not None else sys.stderr
    out.write(f"error: {one_line(message)}\n")
    out.flush()


def warn(message: str, stream: TextIO | None = None) -> None:
    """``warning: message`` on one line of stderr."""
    out = stream if stream is not None else sys.stderr
    out.write(f"warning: {one_line(message)}\n")
    out.flush()


def human_duration(seconds: float) -> str:
    """``"12 s"``, ``"3 min 5 s"``, ``"1 h 2 min"``: how long, as a person says it."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class Progress:
    """A progress line on stderr, redrawn in place at most ``interval`` seconds apart.

    Call it as ``progress(done, total)`` (the client's progress callback), or give each of
    several parallel transfers its own callback with :meth:`part`; the line shows their sum.
    Drawn only when the stream is a terminal unless ``enabled`` says otherwise; always
    finish with :meth:`close` (or use it as a context manager). Amounts are bytes, or with
    ``noun`` counts of it ("objects").
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        noun: str | None = None,
    ) -> None:
        self.label = label
        self.noun = noun
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._parts: dict[str, tuple[int, int | None]] = {}
        self._fixed_total = total
        self._started = clock()
        self._drawn = 0.0
        self._width = 0
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update("", done, total)

    def part(self, key: str) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback for one of several transfers shown together."""

        def report(done: int, total: int) -> None:
            self.update(key, done, total)

        return report

    def update(self, key: str, done: int, total: int | None = None) -> None:
        with self._lock:
            self._parts[key] = (done, total)
            now = self.clock()
            if now - self._drawn >= self.interval:
                self._drawn = now
                self._draw(self.text())

    def text(self) -> str:
        """The line as it would be drawn now."""
        done = sum(d for d, _ in self._parts.values())
        totals = [t for _, t in self._parts.values()]
        total: int | None = self._fixed_total
        if total is None and totals and all(t is not None for t in totals):
            total = sum(t for t in totals if t is not None)
        elapsed = max(self.clock() - self._started, 1e-9)
        noun = f" {self.noun}" if self.noun is not None else ""
        text = f"{self.label}: {self._amount(done)}"
        if total:
            text += f" of {self._amount(total)}{noun} ({100 * done / total:.0f}%)"
        elif noun:
            text += noun
        if done and elapsed > 0.2:
            rate = done / elapsed
            text += f", {rate:,.0f}{noun}/s" if noun else f", {human_rate(rate)}"
            if total and done < total:
                text += f", {human_duration((total - done) * elapsed / done)} left"
        return text

    def _amount(self, n: int) -> str:
        return f"{n:,}" if self.noun is not None else human_size(n)

    def _draw(self, text: str) -> None:
        if not self.enabled or self._closed:
            return
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def close(self, message: str | None = None) -> None:
        """Finish the line (with a last figure, or message instead)."""
        with self._lock:
            if self._closed:
                return
            # A line never drawn (the work failed before it began) is not drawn now either.
            if self.enabled and (self._parts or message is not None):
                self._draw(message if message is not None else self.text())
                self.stream.write("\n")
                self.stream.flush()
            self._closed = True
