"""EnvSource: limits from environment variables, one variable per limit name or pattern.

``RATEKEEPER_LIMIT_AWS__SNS__PUBLISH=300/second`` sets the limit ``aws.sns.publish``. The
part after the prefix spells the limit name; matching ignores case, because variable names
are upper-case by convention (and on Windows). In it::

    letters, digits   themselves           AWS    -> aws
    _                 an underscore        MY_JOB -> my_job
    __                a dot                A__B   -> a.b
    ___D ___S ___Q    -  *  ?              ___S   -> *
    more underscores  dots, then the above _____S -> .*   (2k: k dots; 2k+3: k dots + code)

so ``RATEKEEPER_LIMIT_AWS__STS_____S`` is the pattern ``aws.sts.*``. Where the environment
allows it, ``.``, ``-``, ``*`` and ``?`` may also be written as themselves. A value is a
rate string or a JSON table (``{"rate": "300/second", "algorithm": "token-bucket"}``).

The environment is read at start-up and then at most every ``interval`` seconds, so a
change to ``os.environ`` in the process is seen too. This module must not read the
environment on the hot path, and must not apply a half-good environment: like a file, it is
taken whole or the last good limits are kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ratekeeper._rates import Policy
from ratekeeper.exceptions import ConfigError
from ratekeeper.sources._base import Snapshot
from ratekeeper.sources._polling import PollingSource, Problem, parse_text, problems_error

__all__ = ["EnvSource", "FoldedSnapshot", "decode_name", "encode_name"]

_CODES = {"D": "-", "S": "*", "Q": "?"}
_LITERALS = frozenset(".-*?")
_READ_ATTEMPTS = 3


class FoldedSnapshot(Snapshot):
    """A snapshot whose entries are lower-case and whose lookups ignore case."""

    __slots__ = ()

    def resolve(self, name: str) -> Policy | None:
        return super().resolve(name.lower())

    def match(self, name: str) -> str | None:
        return super().match(name.lower())


def decode_name(spelled: str) -> str:
    """The limit name (lower-case) that the part of a variable after the prefix spells."""
    out: list[str] = []
    i, end = 0, len(spelled)
    while i < end:
        char = spelled[i]
        if char != "_":
            if not ((char.isascii() and char.isalnum()) or char in _LITERALS):
                raise ConfigError(f"{char!r} cannot appear in a limit name spelled in a variable")
            out.append(char.lower())
            i += 1
            continue
        j = i
        while j < end and spelled[j] == "_":
            j += 1
        run = j - i
        if run == 1:
            out.append("_")
        elif run % 2 == 0:
            out.append("." * (run // 2))
        else:
            code = spelled[j : j + 1].upper()
            if code not in _CODES:
                raise ConfigError(
                    f"{run} underscores must be followed by D (-), S (*) or Q (?), "
                    f"not {spelled[j : j + 1] or 'the end of the name'!r}"
                )
            out.append("." * ((run - 3) // 2) + _CODES[code])
            j += 1
        i = j
    if not out:
        raise ConfigError("the variable spells an empty limit name")
    return "".join(out)


def encode_name(name: str) -> str:
    """How a limit name is spelled after the prefix: ``encode_name("aws.sts.*")`` is
    ``"AWS__STS_____S"``. A ConfigError when no spelling reads back as ``name``."""
    out: list[str] = []
    codes = {char: code for code, char in _CODES.items()}
    for char in name:
        if char.isascii() and char.isalnum():
            out.append(char.upper())
        elif char == "_":
            out.append("_")
        elif char == ".":
            out.append("__")
        elif char in codes:
            out.append("___" + codes[char])
        else:
            raise ConfigError(f"limit name {name!r}: {char!r} cannot be spelled in a variable")
    spelled = "".join(out)
    try:
        readable = decode_name(spelled) == name.lower()
    except ConfigError:
        readable = False
    if not readable:
        raise ConfigError(
            f"limit name {name!r} cannot be spelled in a variable: an underscore next to "
            "'.', '-', '*' or '?' is ambiguous"
        )
    return spelled


class EnvSource(PollingSource):
    """Limits from the variables of the environment whose names start with ``prefix``.

    >>> source = EnvSource(environ={"RATEKEEPER_LIMIT_AWS__STS_____S": "5/second"})
    >>> str(source.snapshot().resolve("aws.sts.AssumeRole"))
    '5/second (sliding-window)'

    ``environ`` defaults to :data:`os.environ`, read at start-up and then at most every
    ``interval`` seconds. A bad variable at start-up is a :class:`~ratekeeper.ConfigError`;
    later it keeps the last good limits and is reported once, as in :class:`FileSource`.
    """

    def __init__(
        self,
        prefix: str = "RATEKEEPER_LIMIT_",
        *,
        environ: Mapping[str, str] | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"EnvSource needs a non-empty prefix, got {prefix!r}")
        super().__init__(interval, clock)
        self._prefix = prefix
        self._environ = environ
        self._items: tuple[tuple[str, str], ...] = ()
        self._items = self._read()
        policies, problems = self._parse(self._items)
        if problems:
            raise problems_error(problems)
        self._snapshot = FoldedSnapshot(policies)
        self._due = self._now() + self._interval
        self._start()

    @property
    def prefix(self) -> str:
        """The start of the names of the variables this source reads."""
        return self._prefix

    def variable_for(self, name: str) -> str:
        """The variable that sets ``name``: ``"RATEKEEPER_LIMIT_AWS__SNS__PUBLISH"``."""
        return self._prefix + encode_name(name)

    def _read(self) -> tuple[tuple[str, str], ...]:
        environ = os.environ if self._environ is None else self._environ
        prefix = self._prefix
        for _ in range(_READ_ATTEMPTS):
            try:
                return tuple(sorted((k, v) for k, v in environ.items() if k.startswith(prefix)))
            except RuntimeError:  # another thread set a variable while this one iterated
                continue
        return self._items

    def _parse(self, items: tuple[tuple[str, str], ...]) -> tuple[dict[str, Policy], list[Problem]]:
        policies: dict[str, Policy] = {}
        owners: dict[str, str] = {}
        problems: list[Problem] = []
        for variable, value in items:
            name: str | None = None
            try:
                name = decode_name(variable[len(self._prefix) :])
                if name in owners:
                    raise ConfigError(f"{owners[name]} names the same limit")
                owners[name] = variable
                policies[name] = parse_text(value)
            except ConfigError as exc:
                problems.append(Problem(variable, None, name, str(exc)))
        return policies, problems

    def _poll(self) -> None:
        items = self._read()
        if items == self._items:
            return
        self._items = items
        policies, problems = self._parse(items)
        if problems:
            self._report(problems)
            return
        self._publish(FoldedSnapshot(policies))
        self._clear()

    def __repr__(self) -> str:
        return f"EnvSource(prefix={self._prefix!r})"
