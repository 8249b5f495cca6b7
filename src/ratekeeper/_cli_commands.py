"""The bodies of ``ratekeeper check``, ``show``, ``set``, ``unset`` and ``bench``.

Each takes parsed options and an output stream, calls the public API (sources, storages,
``Limiter.peek``) and returns an exit code; a failure the user can fix is a
:class:`CommandError` carrying its message and exit code, which the command line prints
as ``ratekeeper: error: ...`` without a traceback. Nothing here parses arguments.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote

import ratekeeper
from ratekeeper._limiter import Limiter
from ratekeeper._rates import Policy, PolicySpec
from ratekeeper.exceptions import ConfigError, StorageError
from ratekeeper.sources import FileSource, Snapshot, Source, check_file, load_file
from ratekeeper.sources._base import is_pattern
from ratekeeper.storage._redis_core import KEY_VERSION, key_component

__all__ = [
    "CommandError",
    "bench",
    "bench_script",
    "check",
    "set_limit",
    "show",
    "unset_limit",
]

DEFAULT_HASH = "ratekeeper:limits"
DEFAULT_PREFIX = "ratekeeper"
_SCAN_LIMIT = 1000  # keys looked at by `show` before it stops listing usage
_PEERS = ("limits", "pyrate_limiter", "throttled", "ratelimit", "token_bucket")


class CommandError(Exception):
    """A failure to report in one line: ``ratekeeper: error: <message>``, exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- check -------------------------------------------------------------------------------


def check(paths: Sequence[str], out: TextIO) -> int:
    """Print every problem of every file as ``file:line: limit 'name': what``; 1 if any."""
    found = 0
    for path in paths:
        problems = check_file(path)
        for problem in problems:
            out.write(f"{problem}\n")
        found += len(problems)
        if not problems:
            count = len(load_file(path))
            out.write(f"{path}: ok, {count} limit{'s' if count != 1 else ''}\n")
    if found:
        out.write(f"{found} problem{'s' if found != 1 else ''} found\n")
        return 1
    return 0


# -- connections -------------------------------------------------------------------------


def _redis_source(url: str, key: str) -> Any:
    """A RedisSource on ``url`` that has read the hash, or a CommandError saying why not."""
    try:
        from ratekeeper.sources import RedisSource
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    try:
        source = RedisSource.from_url(url, key=key, subscribe=False, timeout=2.0)
    except ValueError as exc:  # redis-py's verdict on a malformed URL
        raise CommandError(f"bad Redis URL {url!r}: {exc}", 2) from None
    if isinstance(source.last_error, StorageError):
        source.close()
        raise CommandError(f"cannot read limits from Redis at {url}: {source.last_error.__cause__}")
    return source


def _redis_storage(url: str, prefix: str) -> Any:
    from ratekeeper.storage.redis import RedisStorage

    try:
        return RedisStorage.from_url(url, prefix=prefix, socket_timeout=2.0)
    except ValueError as exc:
        raise CommandError(f"bad Redis URL {url!r} or prefix: {exc}", 2) from None


# -- show --------------------------------------------------------------------------------


def show(
    *,
    file: str | None,
    redis_url: str | None,
    name: str | None,
    key: str | None,
    hash_key: str,
    prefix: str,
    out: TextIO,
) -> int:
    """Print the policies a source holds and, with Redis, the live usage of its keys."""
    if file is None and redis_url is None:
        raise CommandError("show needs --file FILE or --redis URL", 2)
    if key is not None and name is None:
        raise CommandError("--key needs a limit NAME", 2)
    if key is not None and redis_url is None:
        raise CommandError(
            "--key needs --redis URL: only a shared storage can be read from outside the "
            "process that counts",
            2,
        )
    source: Source
    if file is not None:
        try:
            source = FileSource(file)
        except ConfigError as exc:
            raise CommandError(
                f"cannot load {file} (see 'ratekeeper check {file}'):\n{exc}"
            ) from None
        origin = file
    else:
        assert redis_url is not None
        source = _redis_source(redis_url, hash_key)
        origin = f"Redis hash {hash_key!r} at {redis_url}"
    try:
        _show_policies(source.snapshot(), origin, name, out)
        if redis_url is not None:
            storage = _redis_storage(redis_url, prefix)
            try:
                limiter = Limiter(source, storage)
                if key is not None:
                    assert name is not None
                    _show_usage(limiter, [(name, key)], redis_url, prefix, out)
                else:
                    pairs, more = _stored_pairs(storage.client, prefix, source.snapshot(), name)
                    _show_usage(limiter, pairs, redis_url, prefix, out)
                    if more:
                        out.write(
                            f"  (only the first {_SCAN_LIMIT} keys were read: name a limit, "
                            "or a key with --key, to see others)\n"
                        )
            finally:
                storage.close()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return 0


def _show_policies(snapshot: Snapshot, origin: str, name: str | None, out: TextIO) -> None:
    if name is not None:
        entry = snapshot.match(name)
        if entry is None:
            raise CommandError(f"no limit in {origin} matches {name!r}")
        via = "" if entry == name else f"  (pattern {entry!r})"
        out.write(f"{name}: {snapshot[entry]}{via}\n")
        return
    count = len(snapshot)
    out.write(f"{count} limit{'s' if count != 1 else ''} in {origin}\n")
    width = max((len(entry) for entry in snapshot), default=0)
    for entry in sorted(snapshot):
        out.write(f"  {entry:<{width}}  {snapshot[entry]}\n")


def _stored_pairs(
    client: Any, prefix: str, snapshot: Snapshot, name: str | None
) -> tuple[list[tuple[str, str]], bool]:
    """The (limit name, key) pairs with state under ``prefix``, read from the key names,
    and whether there were more keys than were read."""
    pattern = re.compile(rf"^{re.escape(prefix)}:{KEY_VERSION}:\{{([^|}}]*)\|([^}}]*)\}}:")
    pairs: set[tuple[str, str]] = set()
    glob = f"{_glob_escape(prefix)}:{KEY_VERSION}:*"
    if name is not None and not is_pattern(name):
        # One limit's keys share the start of their hash tag: let Redis filter them.
        glob = f"{_glob_escape(prefix)}:{KEY_VERSION}:{{{_glob_escape(key_component(name))}|*"
    found = list(_scan(client, glob))
    for raw in found[:_SCAN_LIMIT]:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        match = pattern.match(text)
        if match is None:
            continue
        limit_name, key = (unquote(part) for part in match.groups())
        entry = snapshot.match(limit_name)
        if entry is None or (name is not None and name not in (limit_name, entry)):
            continue
        pairs.add((limit_name, key))
    return sorted(pairs), len(found) > _SCAN_LIMIT


def _scan(client: Any, match: str) -> Iterator[Any]:
    try:
        for index, found in enumerate(client.scan_iter(match=match, count=500)):
            yield found
            if index >= _SCAN_LIMIT:  # one past the limit tells the caller there are more
                return
    except Exception as exc:  # redis-py raises many kinds; each means "cannot read"
        raise CommandError(f"cannot list keys in Redis: {exc}") from None


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _show_usage(
    limiter: Limiter, pairs: Sequence[tuple[str, str]], url: str, prefix: str, out: TextIO
) -> None:
    out.write(f"\nusage in Redis at {url} (prefix {prefix!r})\n")
    if not pairs:
        out.write("  no counts stored\n")
        return
    rows = [("limit", "key", "remaining", "resets in", "binding rate")]
    for limit_name, key in pairs:
        if limit_name.startswith("#") or key.startswith("#"):
            # Long names and keys are stored as a digest: there is nothing to peek with.
            rows.append((limit_name, key, "?", "?", "(stored as a digest)"))
            continue
        try:
            decision = limiter.peek(limit_name, key=key)
        except (ConfigError, StorageError) as exc:
            raise CommandError(str(exc)) from None
        rows.append(
            (
                limit_name,
                repr(key) if key else "(shared)",
                str(decision.remaining),
                f"{decision.reset_after:.3f} s",
                str(decision.rate),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        line = f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"
        out.write(f"{line}  {row[3]:>{widths[3]}}  {row[4]}".rstrip() + "\n")


# -- set / unset -------------------------------------------------------------------------


def spec_of(rate: str, algorithm: str | None, burst: int | None, mode: str | None) -> PolicySpec:
    """The spec the options describe: the rate string alone, or a table with the extras."""
    if algorithm is None and burst is None and mode is None:
        return rate
    table: dict[str, object] = {"rate": rate}
    for field, value in (("algorithm", algorithm), ("burst", burst), ("mode", mode)):
        if value is not None:
            table[field] = value
    return table


def set_limit(*, url: str, name: str, spec: PolicySpec, hash_key: str, out: TextIO) -> int:
    """Write one limit for every process that reads the hash; nothing when it is bad."""
    _check_name(name)
    try:
        Policy.parse(spec)
        from ratekeeper.sources._redis import encode_spec

        encode_spec(spec)
    except ConfigError as exc:
        raise CommandError(f"limit {name!r}: {exc}; nothing was written", 2) from None
    source = _redis_source(url, hash_key)
    try:
        before = source.snapshot().get(name)
        source.set(name, spec)
    except StorageError as exc:
        raise CommandError(str(exc)) from None
    finally:
        source.close()
    was = f" (was {before})" if before is not None else " (new)"
    out.write(f"{name} = {Policy.parse(spec)} in Redis hash {hash_key!r}{was}\n")
    return 0


def unset_limit(*, url: str, name: str, hash_key: str, out: TextIO) -> int:
    """Remove one limit for every process that reads the hash (a missing one is fine)."""
    _check_name(name)
    source = _redis_source(url, hash_key)
    try:
        before = source.snapshot().get(name)
        source.delete(name)
    except StorageError as exc:
        raise CommandError(str(exc)) from None
    finally:
        source.close()
    if before is None:
        out.write(f"{name} was not set in Redis hash {hash_key!r}; nothing to remove\n")
    else:
        out.write(f"{name} removed from Redis hash {hash_key!r} (was {before})\n")
    return 0


def _check_name(name: str) -> None:
    if not name.strip():
        raise CommandError("a limit name must not be empty", 2)
    if name == "__version__":
        raise CommandError("'__version__' is reserved for the hash's version counter", 2)


# -- bench -------------------------------------------------------------------------------


def bench_script() -> Path | None:
    """``benchmarks/bench_hotpath.py`` of the checkout this package runs from, if any."""
    package = Path(ratekeeper.__file__).resolve().parent
    script = package.parent.parent / "benchmarks" / "bench_hotpath.py"
    return script if script.is_file() else None


def bench(options: Sequence[str], script: Path | None = None) -> int:
    """Run the hot-path benchmark in a fresh interpreter; its table goes to stdout."""
    script = script if script is not None else bench_script()
    if script is None:
        raise CommandError(
            "the benchmarks are not installed with the package: run `ratekeeper bench` from a "
            "checkout of the ratekeeper repository (it runs benchmarks/bench_hotpath.py)"
        )
    missing = [name for name in _PEERS if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(
            f"the benchmark compares with peers that are not installed ({', '.join(missing)}): "
            "pip install -e '.[dev]'"
        )
    sys.stdout.flush()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.call([sys.executable, str(script), *options], env=env)
