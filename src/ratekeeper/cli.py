"""The ``ratekeeper`` command: demo, check, show, set, unset and bench.

The command line is a thin shell over the public API: it parses arguments, calls the
library, prints, and maps failures to exit codes (0 ok, 1 problems found or an operation
failed, 2 usage). A failure the user can fix is one line on stderr, ``ratekeeper: error:
...``, never a traceback. The command bodies are in :mod:`ratekeeper._cli_commands` and
:mod:`ratekeeper._demo`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from ratekeeper._cli_commands import (
    DEFAULT_HASH,
    DEFAULT_PREFIX,
    CommandError,
    bench,
    check,
    set_limit,
    show,
    spec_of,
    unset_limit,
)
from ratekeeper._demo import ALGORITHMS, check_rates, run_demo
from ratekeeper.exceptions import ConfigError, StorageError

__all__ = ["main"]

_EPILOG = """\
exit status: 0 success, 1 problems found or the operation failed, 2 usage error.
Run 'ratekeeper COMMAND --help' for the options of a command."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ratekeeper",
        description="Rate limits for Python functions and boto3 clients.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _demo_parser(commands)
    _check_parser(commands)
    _show_parser(commands)
    _set_parsers(commands)
    bench_parser = commands.add_parser(
        "bench",
        help="run the hot-path benchmark side by side with the peers",
        description=(
            "Run benchmarks/bench_hotpath.py from the repository checkout and print its "
            "table: nanoseconds per decorated call for ratekeeper and its peers."
        ),
    )
    bench_parser.add_argument(
        "--quick", action="store_true", help="few iterations: a smoke run whose numbers mean little"
    )
    bench_parser.add_argument("--repeats", type=int, metavar="N", help="repeats per case")
    bench_parser.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    return parser


def _demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="call a decorated function in a loop and change its limit live",
        description=(
            "Decorate a function, call it in a loop, and show admitted and refused calls per "
            "second. The limit lives in a TOML file; halfway the file is rewritten and the "
            "admitted rate follows. Runs on the in-memory storage and ends by itself. With "
            "--redis, N worker processes share the limit in Redis and together hold it."
        ),
    )
    demo.set_defaults(subparser=demo)
    demo.add_argument(
        "--seconds", type=float, default=10.0, help="how long to run, at most 20 (default 10)"
    )
    demo.add_argument("--before", default="5/second", help="the limit at start (default 5/second)")
    demo.add_argument(
        "--after", default="20/second", help="the limit after the change (default 20/second)"
    )
    demo.add_argument(
        "--calls", type=int, default=50, help="calls attempted per second, per process (default 50)"
    )
    demo.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="sliding-log",
        help="how calls are counted (default sliding-log: exact over any interval)",
    )
    demo.add_argument(
        "--redis", metavar="URL", help="share the limit in Redis between --workers processes"
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=3,
        help="processes sharing the limit with --redis (default 3)",
    )
    demo.add_argument(
        "--source",
        choices=("file", "redis"),
        default="file",
        help="with --redis: read the limit from the TOML file (default) or a Redis hash",
    )


def _check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        help="validate limits files",
        description=(
            "Check TOML or JSON limits files. Each problem is printed as "
            "FILE:LINE: limit 'NAME': what is wrong. Exit status 1 when any is found."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="a .toml or .json limits file")


def _show_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "show",
        help="show the limits a source holds and the live usage in Redis",
        description=(
            "Print the policies held by a limits file (--file) or a Redis hash (--redis). "
            "With --redis, also print the usage of every key stored for them (remaining "
            "units, seconds until full again), or of one key with NAME --key KEY."
        ),
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="only this limit name")
    parser.add_argument("--file", metavar="FILE", help="read the limits from this file")
    parser.add_argument(
        "--redis", metavar="URL", help="read usage (and, without --file, the limits) from Redis"
    )
    parser.add_argument("--key", metavar="KEY", help="the usage of this one key of NAME")
    parser.add_argument(
        "--hash",
        default=DEFAULT_HASH,
        metavar="KEY",
        help=f"the limits hash (default {DEFAULT_HASH})",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"the storage's key prefix (default {DEFAULT_PREFIX})",
    )


def _set_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setter = commands.add_parser(
        "set",
        help="add or change a limit for a whole fleet (Redis)",
        description=(
            "Write NAME = RATE into the Redis hash that RedisSource reads; every process "
            "applies it within its polling interval. The spec is validated first: a bad "
            "one writes nothing."
        ),
    )
    setter.add_argument("name", metavar="NAME", help="the limit name, e.g. sns.publish")
    setter.add_argument("rate", metavar="RATE", help="a rate string, e.g. '10/minute;500/hour'")
    setter.add_argument("--redis", metavar="URL", required=True, help="the Redis server")
    setter.add_argument("--algorithm", choices=ALGORITHMS, help="how calls are counted")
    setter.add_argument("--burst", type=int, help="token-bucket capacity")
    setter.add_argument("--mode", choices=("enforce", "shadow"), help="shadow: report only")
    setter.add_argument("--hash", default=DEFAULT_HASH, metavar="KEY", help="the limits hash")
    unsetter = commands.add_parser(
        "unset",
        help="remove a limit for a whole fleet (Redis)",
        description="Remove NAME from the Redis hash that RedisSource reads.",
    )
    unsetter.add_argument("name", metavar="NAME", help="the limit name")
    unsetter.add_argument("--redis", metavar="URL", required=True, help="the Redis server")
    unsetter.add_argument("--hash", default=DEFAULT_HASH, metavar="KEY", help="the limits hash")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.command == "demo":
        if not 0 < args.seconds <= 20 or args.calls < 1 or not 1 <= args.workers <= 32:
            args.subparser.error("--seconds must be in (0, 20], --calls >= 1, --workers 1 to 32")
        try:
            check_rates(args.before, args.after, args.algorithm)
        except ConfigError as exc:
            raise CommandError(f"demo: {exc}", 2) from None
        if args.redis is None:
            return run_demo(
                seconds=args.seconds,
                before=args.before,
                after=args.after,
                calls_per_second=args.calls,
                algorithm=args.algorithm,
                out=out,
                clock=time.monotonic,
                sleep=time.sleep,
            )
        from ratekeeper._demo_fleet import FleetError, run_fleet

        try:
            return run_fleet(
                url=args.redis,
                workers=args.workers,
                seconds=args.seconds,
                before=args.before,
                after=args.after,
                calls_per_second=args.calls,
                algorithm=args.algorithm,
                source_kind=args.source,
                out=out,
            )
        except FleetError as exc:
            raise CommandError(str(exc)) from None
    if args.command == "check":
        return check(args.files, out)
    if args.command == "show":
        return show(
            file=args.file,
            redis_url=args.redis,
            name=args.name,
            key=args.key,
            hash_key=args.hash,
            prefix=args.prefix,
            out=out,
        )
    if args.command == "set":
        spec = spec_of(args.rate, args.algorithm, args.burst, args.mode)
        return set_limit(url=args.redis, name=args.name, spec=spec, hash_key=args.hash, out=out)
    if args.command == "unset":
        return unset_limit(url=args.redis, name=args.name, hash_key=args.hash, out=out)
    options = ["--quick"] if args.quick else []
    if args.repeats is not None:
        options += ["--repeats", str(args.repeats)]
    if args.markdown is not None:
        options += ["--markdown", args.markdown]
    return bench(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    # Problems a source logs are reported by the command itself, once, on stderr.
    logging.getLogger("ratekeeper").addHandler(logging.NullHandler())
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _run(parser, args)
    except CommandError as exc:
        _error(str(exc))
        return exc.code
    except (ConfigError, StorageError) as exc:
        _error(str(exc))
        return 1
    except ImportError as exc:  # a missing extra: the message names it
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _error(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"ratekeeper: error: {message}\n")
