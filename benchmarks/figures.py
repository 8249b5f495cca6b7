"""Draw the algorithm figures of the docs: the real limiter under one bursty load.

    python benchmarks/figures.py [OUTDIR]      (default: docs/_static/figures)

Runs ``ratekeeper.Limiter`` on a ``MemoryStorage`` driven by a ``ManualClock`` (simulated
time: deterministic, and four minutes take milliseconds) for each algorithm at the same
rate, replays the same attempts against each, and writes one SVG per algorithm: attempts
and admissions per bin of time, and the count admitted in the trailing period against the
limit. The docs build calls :func:`write_figures`, so the figures always show the current
code. The SVG is written by hand, so drawing needs nothing beyond the standard library;
a file is rewritten only when its content changes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from ratekeeper import DictSource, Limiter, MemoryStorage
from ratekeeper._rates import ALGORITHMS
from ratekeeper.testing import ManualClock

RATE = "10/minute"
AMOUNT = 10
PERIOD = 60.0
DURATION = 240.0
TRICKLE_EVERY = 10.0  # a steady caller: 6 per minute, within the limit on its own
TRICKLE_START = 3.0
# (start, attempts): the second and third straddle the fixed windows' boundary at 60 s.
BURSTS = ((40.0, 6), (56.0, 8), (61.0, 8), (130.0, 14), (200.0, 5))
BURST_SPACING = 0.4
BIN = 5.0  # seconds per bar
OUTDIR = Path(__file__).resolve().parent.parent / "docs" / "_static" / "figures"

WIDTH = 720
LEFT = 52
RIGHT = 20
BARS_TOP = 86
BARS_HEIGHT = 80
COUNT_TOP = BARS_TOP + BARS_HEIGHT + 44
COUNT_HEIGHT = 110
HEIGHT = COUNT_TOP + COUNT_HEIGHT + 44
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
INK = "#1f2328"
MUTED = "#656d76"
GRID = "#e4e7eb"
BOUNDARY = "#b4bac3"
ATTEMPT = "#c9ced6"
ADMITTED = "#2f6fdb"
LIMIT = "#d1242f"
LIMIT_STYLE = {"stroke_width": "1.5", "stroke_dasharray": "5 3"}


@dataclass(frozen=True, slots=True)
class Run:
    """What one algorithm made of the load."""

    algorithm: str
    attempts: tuple[float, ...]
    admitted: tuple[float, ...]

    @property
    def most_in_any_period(self) -> int:
        """The most admissions in any half-open interval of one period."""
        best = start = 0
        for end, at in enumerate(self.admitted):
            while self.admitted[start] <= at - PERIOD:
                start += 1
            best = max(best, end - start + 1)
        return best


def attempts() -> tuple[float, ...]:
    """The load: a steady trickle plus bursts, as instants in seconds."""
    times = [TRICKLE_START + i * TRICKLE_EVERY for i in range(int(DURATION // TRICKLE_EVERY))]
    for start, count in BURSTS:
        times.extend(round(start + i * BURST_SPACING, 6) for i in range(count))
    return tuple(sorted(times))


def simulate(algorithm: str, load: Sequence[float]) -> Run:
    """Replay ``load`` against a real limiter with the given algorithm, in simulated time."""
    clock = ManualClock()
    limiter = Limiter(
        DictSource({"figure": {"rate": RATE, "algorithm": algorithm}}),
        MemoryStorage(clock=clock),
        sleep=clock.sleep,
    )
    admitted = []
    for at in load:
        clock.advance(at - clock())
        if limiter.hit("figure").allowed:
            admitted.append(at)
    return Run(algorithm, tuple(load), tuple(admitted))


def trailing_counts(admitted: Sequence[float]) -> list[tuple[float, int]]:
    """The step function "admitted in (t - period, t]" as (t, count) corners, 0..DURATION."""
    changes: dict[float, int] = {}
    for at in admitted:
        changes[at] = changes.get(at, 0) + 1
        changes[at + PERIOD] = changes.get(at + PERIOD, 0) - 1
    points = [(0.0, 0)]
    count = 0
    for at in sorted(changes):
        if at > DURATION:
            break
        points.append((at, count))
        count += changes[at]
        points.append((at, count))
    points.append((DURATION, count))
    return points


def binned(times: Sequence[float]) -> list[int]:
    counts = [0] * int(DURATION // BIN)
    for at in times:
        counts[min(int(at // BIN), len(counts) - 1)] += 1
    return counts


def _ceil_to(value: int, step: int) -> int:
    return max(step, -(-value // step) * step)


class _Scale:
    """Maps seconds and counts to SVG coordinates."""

    def __init__(self, bars_max: int, count_max: int) -> None:
        self.bars_max = bars_max
        self.count_max = count_max

    @staticmethod
    def x(seconds: float) -> float:
        return LEFT + seconds / DURATION * (WIDTH - LEFT - RIGHT)

    def bar_y(self, count: float) -> float:
        return BARS_TOP + BARS_HEIGHT - count / self.bars_max * BARS_HEIGHT

    def count_y(self, count: float) -> float:
        return COUNT_TOP + COUNT_HEIGHT - count / self.count_max * COUNT_HEIGHT


def _text(x: float, y: float, body: str, *, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{value}"' for name, value in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(body)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, **attrs: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{value}"' for name, value in attrs.items())
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}/>'
    )


def _rect(x: float, y: float, width: float, height: float, fill: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}"/>'
    )


def _time_axis(s: _Scale) -> list[str]:
    """Ticks every 30 s; darker at each period, where fixed windows reset."""
    out = []
    for at in range(0, int(DURATION) + 1, 30):
        x = s.x(at)
        colour = BOUNDARY if at % PERIOD == 0 else GRID
        out.append(_line(x, BARS_TOP, x, BARS_TOP + BARS_HEIGHT, colour))
        out.append(_line(x, COUNT_TOP, x, COUNT_TOP + COUNT_HEIGHT, colour))
        out.append(_text(x, COUNT_TOP + COUNT_HEIGHT + 16, f"{at} s", anchor="middle"))
    middle = (s.x(0) + s.x(DURATION)) / 2
    out.append(_text(middle, COUNT_TOP + COUNT_HEIGHT + 34, "simulated time", anchor="middle"))
    return out


def _y_ticks(s: _Scale, top: float, most: int, y: Callable[[float], float]) -> list[str]:
    out = [_line(s.x(0), top, s.x(0), y(0), INK)]
    for tick in range(0, most + 1, 5):
        out.append(_line(s.x(0) - 4, y(tick), s.x(0), y(tick), INK))
        out.append(_text(s.x(0) - 7, y(tick) + 4, str(tick), anchor="end"))
    return out


def _bars(run: Run, s: _Scale) -> list[str]:
    """Panel 1: attempts per bin in grey, the admitted part of them in blue over it."""
    legend = WIDTH - RIGHT - 190
    out = [
        _text(LEFT, BARS_TOP - 10, f"attempts and admissions per {BIN:g} s", font_weight="600"),
        _rect(legend, BARS_TOP - 20, 10, 10, ATTEMPT),
        _text(legend + 14, BARS_TOP - 11, "refused"),
        _rect(legend + 80, BARS_TOP - 20, 10, 10, ADMITTED),
        _text(legend + 94, BARS_TOP - 11, "admitted"),
        *_y_ticks(s, BARS_TOP, s.bars_max, s.bar_y),
    ]
    width = s.x(BIN) - s.x(0) - 2
    tried_bins, passed_bins = binned(run.attempts), binned(run.admitted)
    for index, (tried, passed) in enumerate(zip(tried_bins, passed_bins, strict=True)):
        left = s.x(index * BIN) + 1
        for count, fill in ((tried, ATTEMPT), (passed, ADMITTED)):
            if count:
                out.append(_rect(left, s.bar_y(count), width, s.bar_y(0) - s.bar_y(count), fill))
    out.append(_line(s.x(0), s.bar_y(0), s.x(DURATION), s.bar_y(0), INK))
    return out


def _trailing(run: Run, s: _Scale) -> list[str]:
    """Panel 2: the count admitted in the trailing period, its excess over the limit shaded."""
    legend = WIDTH - RIGHT - 190
    limit_y = s.count_y(AMOUNT)
    x0, x1 = s.x(0), s.x(DURATION)
    out = [
        _text(LEFT, COUNT_TOP - 10, f"admitted in the last {PERIOD:g} s", font_weight="600"),
        _line(legend, COUNT_TOP - 14, legend + 18, COUNT_TOP - 14, LIMIT, **LIMIT_STYLE),
        _text(legend + 22, COUNT_TOP - 10, f"limit ({AMOUNT})"),
        _line(legend + 80, COUNT_TOP - 14, legend + 98, COUNT_TOP - 14, ADMITTED, stroke_width="2"),
        _text(legend + 102, COUNT_TOP - 10, f"most: {run.most_in_any_period}"),
    ]
    for tick in range(5, s.count_max + 1, 5):
        out.append(_line(x0, s.count_y(tick), x1, s.count_y(tick), GRID))
    out.extend(_y_ticks(s, COUNT_TOP, s.count_max, s.count_y))
    corners = " ".join(
        f"{s.x(at):.1f},{s.count_y(count):.1f}" for at, count in trailing_counts(run.admitted)
    )
    out += [
        '<clipPath id="over"><rect x="0" y="0" '
        f'width="{WIDTH}" height="{limit_y:.1f}"/></clipPath>',
        f'<polygon points="{x0:.1f},{s.count_y(0):.1f} {corners} {x1:.1f},{s.count_y(0):.1f}" '
        f'fill="{LIMIT}" fill-opacity="0.18" clip-path="url(#over)"/>',
        f'<polyline points="{corners}" fill="none" stroke="{ADMITTED}" stroke-width="2" '
        'stroke-linejoin="round"/>',
        _line(x0, limit_y, x1, limit_y, LIMIT, **LIMIT_STYLE),
        _line(x0, s.count_y(0), x1, s.count_y(0), INK),
    ]
    return out


def render(run: Run, scale: _Scale) -> str:
    """One figure: bars of attempts and admissions, then the trailing count and the limit."""
    title = f"{run.algorithm} at {RATE}"
    desc = (
        f"{len(run.attempts)} attempts, {len(run.admitted)} admitted; at most "
        f"{run.most_in_any_period} admitted in any {PERIOD:g} s interval (limit {AMOUNT})."
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title desc" '
        f'font-family="{FONT}" font-size="12" fill="{INK}">',
        f'<title id="title">{escape(title)}</title>',
        f'<desc id="desc">{escape(desc)}</desc>',
        # Opaque, so the figure reads the same on a light or a dark page.
        _rect(0, 0, WIDTH, HEIGHT, "#ffffff"),
        _text(LEFT, 22, title, font_size="15", font_weight="600"),
        _text(LEFT, 42, desc, fill=MUTED),
        *_time_axis(scale),
        *_bars(run, scale),
        *_trailing(run, scale),
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def runs() -> list[Run]:
    """Every algorithm, under the same load."""
    load = attempts()
    return [simulate(algorithm, load) for algorithm in ALGORITHMS]


def write_figures(outdir: Path = OUTDIR) -> list[Path]:
    """Write ``<algorithm>.svg`` for each algorithm into ``outdir``; returns the paths."""
    done = runs()
    # One scale for all four, so the figures compare at a glance.
    scale = _Scale(
        _ceil_to(max(max(binned(run.attempts)) for run in done), 5),
        _ceil_to(max(max(run.most_in_any_period for run in done), 2 * AMOUNT), 5),
    )
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in done:
        path = outdir / f"{run.algorithm}.svg"
        svg = render(run, scale)
        if not path.exists() or path.read_text(encoding="utf-8") != svg:
            path.write_text(svg, encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str]) -> None:
    outdir = Path(argv[0]) if argv else OUTDIR
    for run in runs():
        print(
            f"{run.algorithm:15} attempts {len(run.attempts):3}  admitted {len(run.admitted):3}"
            f"  most in any {PERIOD:g} s: {run.most_in_any_period}"
        )
    for path in write_figures(outdir):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
