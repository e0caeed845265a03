"""Progress for long commands (pre-training, evaluation): tqdm bars on a terminal, plain lines in pipes and logs.

A tqdm bar redraws itself with carriage returns and, when bars are nested (segment's epochs around its test
passes), cursor-up escapes; written to a file or a pipe these become one unreadable line that result tables get
tangled in. When the stream is not a terminal, :func:`progress_bar` returns :class:`PlainProgress` instead: one
line every :data:`PLAIN_EVERY` seconds and one when the bar ends, each ending in a newline.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, TextIO

PLAIN_EVERY = 30.0  # seconds between two lines of a plain progress report (a log needs no more)


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, leave: bool = True, initial: int = 0, file: TextIO | None = None):
    """A tqdm bar when ``file`` (default: stderr) is a terminal, else a :class:`PlainProgress`; both take
    ``update``, ``set_postfix``, ``close`` and iterate over ``iterable``."""
    stream = file if file is not None else sys.stderr
    if not disable and not _is_terminal(stream):
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial,
                file=stream)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def note(text: str, file: TextIO | None = None) -> None:
    """A status line on stderr that does not cut through a bar being drawn on a terminal."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=file if file is not None else sys.stderr)


class PlainProgress:
    """tqdm's interface for a log: ``desc: n/total unit (p%), rate unit/s`` lines, never redrawn."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, file: TextIO | None = None):
        self.iterable, self.desc, self.unit, self.file = iterable, desc, unit, file or sys.stderr
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.start = total, initial, initial
        self.postfix, self.closed = "", False
        self.t0 = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY:
            self.last = now
            self._line(self._position())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._line(f"done, {self._count()} in {time.monotonic() - self.t0:.1f}s")

    def _position(self) -> str:
        done = self._count() + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        elapsed = time.monotonic() - self.t0
        return done + (f", {(self.n - self.start) / elapsed:.1f} {self.unit}/s" if elapsed > 0 else "")

    def _count(self) -> str:
        return f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"

    def _line(self, text: str) -> None:
        post = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc}: {text}{post}" if self.desc else text + post, file=self.file, flush=True)
