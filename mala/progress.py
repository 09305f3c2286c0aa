"""Progress of long loops: a live tqdm bar on a terminal, plain lines in logs (CI, files, pipes).

Off a terminal tqdm redraws its bar with carriage returns many times a second, which fills a log with hundreds of
kilobytes; there a line is written at every 10 % of the total, and every HEARTBEAT_S seconds between them (a slow
loop, or one of unknown length, still shows it is alive). No torch here: the ONNX runtime path uses it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

STEPS = 10  # lines at every 1/STEPS of the total
HEARTBEAT_S = 30.0  # at most this long without a line


class LineProgress:
    """tqdm's interface as the package uses it (iterate, update, set_postfix, close), written as plain lines."""

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, unit: str, initial: int = 0,
                 disable: bool = False):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None else _length(iterable)
        self.n = self.initial = self._shown_n = initial
        self._started = self._shown_at = time.monotonic()
        self._postfix = ""

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._step(self.n) > self._step(self._shown_n) or time.monotonic() - self._shown_at >= HEARTBEAT_S:
            self._show()

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self.n != self._shown_n:
            self._show()

    def _step(self, n: int) -> int:
        return n * STEPS // self.total if self.total else 0

    def _show(self) -> None:
        self._shown_n, self._shown_at = self.n, time.monotonic()
        if not self.disable:
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        """`desc: n/total unit (p%), rate unit/s, m:ss left, postfix`."""
        elapsed = time.monotonic() - self._started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%)" if self.total
                 else f"{self.n} {self.unit}", f"{rate:.3g} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"{tqdm.format_interval(max(self.total - self.n, 0) / rate)} left")
        return f"{self.desc}: {', '.join(parts + ([self._postfix] if self._postfix else []))}"


ProgressBar = tqdm | LineProgress


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def on_terminal() -> bool:
    return sys.stderr is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it",
             initial: int = 0, leave: bool = True, disable: bool = False) -> ProgressBar:
    """A tqdm bar on a terminal (`leave`: keep it when done), plain progress lines otherwise."""
    if on_terminal():
        return tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial, leave=leave, disable=disable,
                    dynamic_ncols=True)
    return LineProgress(iterable, desc, total, unit, initial, disable)
