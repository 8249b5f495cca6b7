"""FileSource: limits read from a TOML or JSON file, reloaded when the file changes.

Also the file checker (:func:`check_file`, :func:`load_file`), which reports every problem
with file, line, limit name and what is wrong; ``ratekeeper check FILE`` is built on it.

The hot path only compares a clock; the file is stat'ed at most every ``interval`` seconds
and read only when its (mtime, size, inode) moved. A bad file never replaces good limits.
This module must not touch the file outside a look, and must not apply half a file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time as _time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ratekeeper._rates import Policy, Rate
from ratekeeper.exceptions import ConfigError
from ratekeeper.sources._base import Snapshot
from ratekeeper.sources._polling import PollingSource, Problem, logger, problems_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = ["FileSource", "check_file", "load_file", "parse_limits"]

_FORMATS = {".toml": "toml", ".json": "json"}
_TOML_WHERE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)\s*$")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = re.compile(r"^\s*\[")
_SPEC_KEYS = ("rate", "algorithm", "burst", "mode")
# A file modified this recently may be modified again within the filesystem's timestamp
# granularity (up to 2 s on some) without its signature moving; until it is older, a look
# also compares the content (git's "racily clean" rule).
_RACY_NS = 2_000_000_000


def file_format(path: str | os.PathLike[str]) -> str:
    """``"toml"`` or ``"json"``, from the file's suffix; a ConfigError for anything else."""
    found = _FORMATS.get(Path(path).suffix.lower())
    if found is None:
        raise ConfigError(f"{os.fspath(path)}: a limits file must end in .toml or .json")
    return found


def parse_limits(
    data: bytes, fmt: str, origin: str = "<limits>"
) -> tuple[dict[str, Policy], list[Problem]]:
    """Parse a limits document; return the good policies and every problem found."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        return {}, [Problem(origin, at, None, f"not valid UTF-8 text ({exc.reason})")]
    problems: list[Problem] = []
    lines = text.splitlines()
    try:
        document = _load_document(text, fmt, origin, lines, problems)
    except ValueError as exc:
        return {}, [_syntax_problem(exc, fmt, origin, len(lines))]
    except RecursionError:  # both parsers recurse per nesting level
        return {}, [Problem(origin, None, None, f"{fmt.upper()} error: nested too deeply")]
    if not isinstance(document, Mapping):
        return {}, [Problem(origin, 1, None, "the document must be a table with a 'limits' table")]
    for key in document:
        if key != "limits":
            problems.append(
                Problem(
                    origin,
                    _locate(lines, key, None, fmt),
                    None,
                    f"unknown top-level key {key!r} (expected only 'limits')",
                )
            )
    limits = document.get("limits", {})
    if not isinstance(limits, Mapping):
        line = _locate(lines, "limits", None, fmt)
        return {}, [*problems, Problem(origin, line, None, "'limits' must be a table")]
    policies: dict[str, Policy] = {}
    for name, spec in limits.items():
        if not name.strip():
            problems.append(
                Problem(
                    origin, _locate(lines, name, None, fmt), None, "a limit name must not be empty"
                )
            )
            continue
        try:
            policies[name] = Policy.parse(spec)
        except ConfigError as exc:
            field = _faulty_field(spec)
            problems.append(
                Problem(
                    origin, _locate(lines, name, field, fmt), name, _explain(exc, name, spec, fmt)
                )
            )
    problems.sort(key=lambda problem: problem.line or len(lines) + 1)
    return policies, problems


def check_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem in a limits file, each with file, line and limit name; [] if none."""
    origin = os.fspath(path)
    try:
        fmt = file_format(path)
        data = Path(path).read_bytes()
    except ConfigError as exc:
        return [Problem(origin, None, None, str(exc).removeprefix(f"{origin}: "))]
    except OSError as exc:
        return [Problem(origin, None, None, f"cannot read the file: {exc.strerror or exc}")]
    return parse_limits(data, fmt, origin)[1]


def load_file(path: str | os.PathLike[str]) -> dict[str, Policy]:
    """The policies of a limits file; a ConfigError listing every problem if it has any."""
    problems = check_file(path)
    if problems:
        raise problems_error(problems)
    return parse_limits(Path(path).read_bytes(), file_format(path), os.fspath(path))[0]


class FileSource(PollingSource):
    """Limits from a TOML or JSON file, reloaded when it changes (in place or by rename).

    The file is stat'ed at most every ``interval`` seconds: by the source's daemon thread
    with the default clock, or, when ``clock`` (seconds, e.g. a ManualClock) is given, by
    the call that finds the interval past. A file that turns bad, or disappears, keeps the
    last good limits: each problem is logged once (logger ``ratekeeper.sources``) and shown
    in ``last_error`` and ``problems``. At start-up a bad file is a
    :class:`~ratekeeper.ConfigError`, and so is a missing one unless ``optional=True`` (then
    the source is empty until the file appears). :meth:`close` stops the looks.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        interval: float = 1.0,
        *,
        optional: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(interval, clock)
        self._path = Path(path)
        self._origin = os.fspath(path)
        self._format = file_format(path)
        self._optional = optional
        self._signature: tuple[int, int, int] | None = None
        self._data: bytes | None = None  # the content last looked at, good or bad
        self._racy = False
        self._seen = False  # whether the file has existed since the source was made
        try:
            stat = self._path.stat()
            data = self._path.read_bytes()
        except FileNotFoundError:
            if not optional:
                raise ConfigError(
                    f"{self._origin}: no such limits file (pass optional=True to start without it)"
                ) from None
        except OSError as exc:
            raise ConfigError(f"{self._origin}: cannot read the limits file: {exc}") from None
        else:
            policies, problems = parse_limits(data, self._format, self._origin)
            if problems:
                raise problems_error(problems)
            self._remember(stat, data)
            self._snapshot = Snapshot(policies)
        self._due = self._now() + self._interval
        self._start()

    @property
    def path(self) -> Path:
        """The file this source reads."""
        return self._path

    def _poll(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            if self._seen:
                self._forget("the limits file is missing")
            return
        except OSError as exc:
            self._forget(f"cannot stat the limits file: {exc.strerror or exc}")
            return
        if _signature(stat) == self._signature and not self._racy:
            return
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            self._forget(f"cannot read the limits file: {exc.strerror or exc}")
            return
        unchanged = data == self._data
        self._remember(stat, data)
        if unchanged:  # touched, or racily re-read: the last verdict stands
            return
        policies, problems = parse_limits(data, self._format, self._origin)
        if problems:
            self._report(problems)
            return
        logger.info("%s: limits reloaded (%d entries)", self._origin, len(policies))
        self._publish(Snapshot(policies))
        self._clear()

    def _remember(self, stat: os.stat_result, data: bytes) -> None:
        self._seen = True
        self._signature = _signature(stat)
        self._data = data
        self._racy = stat.st_mtime_ns >= _time.time_ns() - _RACY_NS

    def _forget(self, message: str) -> None:
        # Forget the content, so that the file coming back is read and checked again.
        self._signature = None
        self._data = None
        self._report([Problem(self._origin, None, None, message)])

    def __repr__(self) -> str:
        return f"FileSource({self._origin!r})"


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    # The inode catches replace-by-rename even when mtime and size happen to match.
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _load_document(
    text: str, fmt: str, origin: str, lines: Sequence[str], problems: list[Problem]
) -> object:
    if fmt == "toml":
        return tomllib.loads(text)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for key, value in items:
            if key in table:
                problems.append(
                    Problem(
                        origin,
                        _locate(lines, key, None, fmt, last=True),
                        None,
                        f"key {key!r} appears twice in one table",
                    )
                )
            table[key] = value
        return table

    return json.loads(text, object_pairs_hook=pairs)


def _syntax_problem(exc: ValueError, fmt: str, origin: str, count: int) -> Problem:
    if isinstance(exc, json.JSONDecodeError):
        return Problem(
            origin, exc.lineno, None, f"JSON syntax error: {exc.msg} (column {exc.colno})"
        )
    message = str(exc)
    if fmt == "json":  # a ValueError from the JSON parser itself (an integer too long)
        return Problem(origin, None, None, f"JSON error: {message}")
    match = _TOML_WHERE.search(message)
    line: int | None = None
    if match is not None:
        message = message[: match.start()]
        if match.group(1) is not None:
            line = int(match.group(1))
            message = f"{message} (column {match.group(2)})"
        else:
            line = max(count, 1)
            message = f"{message} (at the end of the file)"
    return Problem(
        origin, getattr(exc, "lineno", None) or line, None, f"TOML syntax error: {message}"
    )


def _faulty_field(spec: object) -> str | None:
    """Which setting of a limit table is wrong, to point at its line (None: the name's)."""
    if not isinstance(spec, Mapping):
        return None
    for key in spec:
        if key not in _SPEC_KEYS:
            return str(key)
    if "rate" not in spec:
        return None
    try:
        Rate.parse_many(spec["rate"])
    except ConfigError:
        return "rate"
    for key in ("burst", "algorithm", "mode"):
        if key in spec:
            try:
                Policy.parse({"rate": spec["rate"], key: spec[key]})
            except ConfigError:
                return key
    return "rate"


def _explain(exc: ConfigError, name: str, spec: object, fmt: str) -> str:
    message = str(exc)
    if fmt == "toml" and isinstance(spec, Mapping) and "rate" not in spec:
        nested = [key for key, value in spec.items() if isinstance(value, (str, Mapping))]
        if nested and not any(key in _SPEC_KEYS for key in spec):
            message += f'; a limit name with dots must be quoted: "{name}.{nested[0]}" = ...'
    return message


def _locate(
    lines: Sequence[str], name: str, field: str | None, fmt: str, *, last: bool = False
) -> int | None:
    """The 1-based line where ``name`` is a key (then ``field`` after it), best effort."""
    found = _find_key(lines, name, 0, fmt, last=last)
    if found is None:
        return None
    if field is not None:
        header = fmt == "toml" and _HEADER.match(lines[found]) is not None
        end = len(lines)
        if header:
            end = next(
                (i for i in range(found + 1, len(lines)) if _HEADER.match(lines[i])), len(lines)
            )
        inner = _find_key(lines[:end], field, found, fmt)
        if inner is not None:
            return inner + 1
    return found + 1


def _find_key(
    lines: Sequence[str], key: str, start: int, fmt: str, *, last: bool = False
) -> int | None:
    forms = [re.escape(json.dumps(key, ensure_ascii=False))]
    if fmt == "toml":
        forms.append(re.escape(f"'{key}'"))
        if _BARE_KEY.fullmatch(key):
            forms.append(rf"(?<![\w\"'-]){re.escape(key)}(?![\w-])")
    pattern = re.compile(rf"(?:{'|'.join(forms)})\s*[=:\].]")
    hits = [i for i in range(start, len(lines)) if pattern.search(lines[i])]
    if not hits:
        return None
    return hits[-1] if last else hits[0]
