"""The exceptions ratekeeper raises, under one root.

::

    RatekeeperError
     ├── RateLimitExceeded      a call was refused; carries the Decision
     ├── ConfigError            (also a ValueError) a bad rate, policy, source or file
     └── StorageError           the storage could not decide; the backend's error is __cause__

This module must not import anything else from ratekeeper at module level, so every
layer can raise these without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratekeeper._decision import Decision

__all__ = ["ConfigError", "RateLimitExceeded", "RatekeeperError", "StorageError"]


class RatekeeperError(Exception):
    """Root of every exception raised by ratekeeper."""


class RateLimitExceeded(RatekeeperError):
    """A call was refused by a limit.

    ``decision`` is the refusing :class:`~ratekeeper.Decision`: its ``retry_after`` is what
    an HTTP handler puts in ``Retry-After`` (``math.inf`` when the cost can never be
    admitted), and ``limit_name`` / ``key`` say which limit and who.
    """

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        super().__init__(message if message is not None else decision.describe())

    @property
    def retry_after(self) -> float:
        """Seconds until the same call could be admitted (``math.inf``: never)."""
        return self.decision.retry_after

    @property
    def limit_name(self) -> str:
        """The limit name that refused the call."""
        return self.decision.limit_name

    @property
    def key(self) -> str:
        """The key (who is limited) that was refused."""
        return self.decision.key


class ConfigError(RatekeeperError, ValueError):
    """A rate string, policy, config file or source entry is invalid.

    The message names what is wrong and where: the limit name, the file and line, the value.
    """


class StorageError(RatekeeperError):
    """The storage could not be reached or failed to decide.

    Raised only when the failure policy is ``"raise"``; the backend's own exception is
    chained as ``__cause__``.
    """
