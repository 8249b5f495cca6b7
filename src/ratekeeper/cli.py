"""The ``ratekeeper`` command: ``demo`` (and, as they land, check, show, set, bench).

The command line is a thin shell over the public API: it parses arguments, calls the
library, prints, and maps failures to exit codes (0 ok, 1 problems found, 2 usage).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ratekeeper._demo import ALGORITHMS, run_demo

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ratekeeper",
        description="Rate limits for Python functions and boto3 clients.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="call a decorated function in a loop and change its limit live",
        description=(
            "Decorate a function, call it in a loop, and show admitted and refused calls per "
            "second; midway the limit is changed in the config source and the admitted rate "
            "follows. Runs on the in-memory storage and ends by itself."
        ),
    )
    demo.add_argument("--seconds", type=float, default=10.0, help="how long to run (default 10)")
    demo.add_argument("--before", default="5/second", help="the limit at start (default 5/second)")
    demo.add_argument("--after", default="20/second", help="the limit after the change")
    demo.add_argument(
        "--calls", type=int, default=50, help="calls attempted per second (default 50)"
    )
    demo.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="sliding-log",
        help="how calls are counted (default sliding-log: exact over any 1 s interval)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if not 0 < args.seconds <= 600 or args.calls < 1:
        parser.error("--seconds must be in (0, 600] and --calls at least 1")
    return run_demo(
        seconds=args.seconds,
        before=args.before,
        after=args.after,
        calls_per_second=args.calls,
        algorithm=args.algorithm,
        out=sys.stdout,
        clock=time.monotonic,
        sleep=time.sleep,
    )
