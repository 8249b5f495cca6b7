"""Timing helpers for the scripts in ``benchmarks/``: compiled loops, interleaved repeats.

A case is one statement. It is compiled into a loop of N iterations timed with
``time.perf_counter_ns``, the way :mod:`timeit` does it, so no lambda or extra call is
added on top of what is measured. All cases run round-robin (one repeat of each, then the
next repeat of each, in a rotating order), so noise from the machine hits every case
alike, and a case reports the median of its repeats. Nothing is subtracted: a result is
raw nanoseconds per iteration, loop included; the empty loop is a case of its own.

The garbage collector stays enabled while timing (it runs in real programs too, and
charges a library that allocates for what it allocates); a collection runs before each
repeat so no case pays for the garbage of the one before.

Nothing here knows about rate limiting.
"""

from __future__ import annotations

import datetime
import gc
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

__all__ = ["Case", "Result", "compile_loop", "machine", "markdown_table", "measure"]

Loop = Callable[[int], int]

_TEMPLATE = """\
def loop(_calls, _clock=_clock, _repeat=_repeat):
    _it = _repeat(None, _calls)
    _t0 = _clock()
    for _ in _it:
        {stmt}
    return _clock() - _t0
"""


@dataclass(frozen=True)
class Case:
    """One measured statement.

    ``namespace`` holds the names the statement uses (they are the loop's globals, as
    for code at module level). ``before_repeat`` runs untimed before every repeat (to
    empty a log, say). ``calls`` fixes the iterations per repeat, for a case whose cost
    per call depends on how many calls came before; otherwise they are calibrated so one
    repeat lasts about the target time.
    """

    name: str
    stmt: str
    namespace: Mapping[str, object] = field(default_factory=dict)
    before_repeat: Callable[[], object] | None = None
    calls: int | None = None


@dataclass(frozen=True)
class Result:
    """The repeats of one case, in nanoseconds per iteration."""

    case: Case
    calls: int
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


def compile_loop(stmt: str, namespace: Mapping[str, object]) -> Loop:
    """A function running ``stmt`` N times and returning the elapsed nanoseconds."""
    scope: dict[str, object] = {
        **namespace,
        "_clock": time.perf_counter_ns,
        "_repeat": itertools.repeat,
    }
    exec(compile(_TEMPLATE.format(stmt=stmt), "<benchmark>", "exec"), scope)
    loop = scope["loop"]
    assert callable(loop)
    return loop


def _calibrate(loop: Loop, target_ns: int, min_calls: int, max_calls: int) -> int:
    calls = 100
    while True:
        elapsed = loop(calls)
        if elapsed >= target_ns // 10 or calls >= max_calls:
            break
        calls *= 10
    wanted = target_ns * calls // max(elapsed, 1)
    return max(min_calls, min(max_calls, wanted))


def measure(
    cases: Sequence[Case],
    *,
    repeats: int,
    target_ns: int,
    min_calls: int = 1_000,
    max_calls: int = 5_000_000,
) -> list[Result]:
    """Time every case ``repeats`` times, interleaved; results in the order of ``cases``."""
    loops = [compile_loop(case.stmt, case.namespace) for case in cases]
    calls: list[int] = []
    for case, loop in zip(cases, loops, strict=True):
        if case.before_repeat is not None:
            case.before_repeat()
        if case.calls is not None:
            loop(min(case.calls, 100))  # warm up caches and the specialising interpreter
            calls.append(case.calls)
        else:
            calls.append(_calibrate(loop, target_ns, min_calls, max_calls))
    samples: list[list[float]] = [[] for _ in cases]
    order = list(range(len(cases)))
    for repeat in range(repeats):
        shift = repeat % len(order)
        for index in order[shift:] + order[:shift]:
            case = cases[index]
            if case.before_repeat is not None:
                case.before_repeat()
            gc.collect()
            samples[index].append(loops[index](calls[index]) / calls[index])
    return [
        Result(case, n, tuple(values))
        for case, n, values in zip(cases, calls, samples, strict=True)
    ]


def machine(packages: Sequence[str] = ()) -> list[tuple[str, str]]:
    """What the numbers were measured on: interpreter, platform, CPUs, date, versions."""
    info = [
        ("Date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("Platform", platform.platform()),
        ("Processor", platform.processor() or platform.machine()),
        ("CPUs", str(os.cpu_count())),
    ]
    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    if versions:
        info.append(("Packages", ", ".join(versions)))
    return info


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """A Markdown table with aligned columns; the columns in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(headers), line(rule), *(line(row) for row in rows)])


def emit(text: str, markdown: os.PathLike[str] | str | None) -> None:
    """Print a report, and also write it to ``markdown`` when a path is given."""
    print(text)
    if markdown is not None:
        with open(markdown, "w", encoding="utf-8") as out:
            out.write(text + "\n")
