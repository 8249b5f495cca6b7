"""Assumed-role sessions whose credentials refresh themselves, with AssumeRole rate-limited.

botocore has no public constructor for a session that assumes a role from code and keeps
its credentials fresh; the pieces exist (``DeferredRefreshableCredentials``, a credential
provider chain) and this module assembles them without touching the session's private
attributes: the credentials reach the session through its public ``credential_provider``
component. What it must not do: cache or share the credentials anywhere but in the
returned session (secrets at rest are the caller's decision), or wait after signing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3.session
import botocore.credentials
import botocore.session
from botocore.exceptions import ClientError

from ratekeeper.exceptions import ConfigError

if TYPE_CHECKING:
    from ratekeeper._limiter import Limiter

__all__ = ["MAX_DURATION", "MIN_DURATION", "assume_role_session", "refresh_windows"]

MIN_DURATION = 900  # AWS refuses a DurationSeconds below 15 minutes
MAX_DURATION = 43_200  # and above 12 hours (the role's own maximum may be lower)
_ADVISORY = 15 * 60  # botocore's defaults: refresh when 15 min remain, block at 10
_MANDATORY = 10 * 60
_RESERVED = ("RoleArn", "RoleSessionName", "DurationSeconds")


def refresh_windows(duration: int) -> tuple[int, int]:
    """(advisory, mandatory) refresh windows in seconds for credentials lasting ``duration``.

    botocore refreshes 15 minutes before expiry and blocks at 10: with a 900-second
    session the credentials would look stale the moment they arrive, and every API call
    would assume the role again. The windows shrink with short sessions, so credentials
    are used for at least three quarters of their life.
    """
    return min(_ADVISORY, duration // 4), min(_MANDATORY, duration // 6)


class _AssumedRoleCredentials(botocore.credentials.DeferredRefreshableCredentials):
    """Deferred refreshable credentials with refresh windows fitted to the session length."""

    def __init__(self, refresh_using: Callable[[], Mapping[str, str]], duration: int) -> None:
        super().__init__(refresh_using, "assume-role")
        # The same attributes RefreshableCredentials' advisory_timeout / mandatory_timeout
        # arguments set; the deferred subclass does not forward those arguments.
        self._advisory_refresh_timeout, self._mandatory_refresh_timeout = refresh_windows(duration)


class _Provider(botocore.credentials.CredentialProvider):
    METHOD = "assume-role"
    CANONICAL_NAME = "custom-ratekeeper-assume-role"

    def __init__(self, credentials: _AssumedRoleCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> _AssumedRoleCredentials:
        return self._credentials


def _denied(error: ClientError, role_arn: str) -> ClientError:
    """The AccessDenied error again, its message saying which permission is missing."""
    response: dict[str, Any] = dict(error.response)
    detail = dict(response.get("Error", {}))
    detail["Message"] = (
        f"{detail.get('Message', 'access denied')} -- assuming {role_arn} needs two things: "
        "an IAM policy on the calling identity that allows sts:AssumeRole on this role "
        "ARN, and a trust policy on the role that names the calling identity (or its "
        "account) as a principal allowed to perform sts:AssumeRole"
    )
    response["Error"] = detail
    return ClientError(response, error.operation_name)  # type: ignore[arg-type]


def _check(
    role_arn: object, session_name: object, duration: object, extra: Mapping[str, Any]
) -> None:
    if not isinstance(role_arn, str) or not role_arn.startswith("arn:"):
        raise ConfigError(f"assume_role_session(): role_arn must be a role ARN, got {role_arn!r}")
    if not isinstance(session_name, str) or not 2 <= len(session_name) <= 64:
        raise ConfigError(
            f"assume_role_session({role_arn!r}): session_name must be a string of 2 to 64 "
            f"characters, got {session_name!r}"
        )
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise ConfigError(
            f"assume_role_session({role_arn!r}): duration must be whole seconds, got {duration!r}"
        )
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ConfigError(
            f"assume_role_session({role_arn!r}): duration={duration} is outside what AWS "
            f"accepts ({MIN_DURATION} to {MAX_DURATION} seconds, and at most the role's "
            "maximum session duration; 3600 when chaining roles)"
        )
    reserved = sorted(set(extra) & set(_RESERVED))
    if reserved:
        raise ConfigError(
            f"assume_role_session({role_arn!r}): pass {', '.join(reserved)} as role_arn, "
            "session_name and duration, not as AssumeRole arguments"
        )


def assume_role_session(
    role_arn: str,
    *,
    session_name: str,
    duration: int = 3600,
    base_session: boto3.session.Session | None = None,
    limiter: Limiter | None = None,
    **assume_role_kwargs: Any,
) -> boto3.session.Session:
    """A boto3 ``Session`` acting as ``role_arn``, whose credentials refresh themselves.

    The role is assumed with ``base_session``'s credentials (default: a new
    ``boto3.Session()``) on first use, and again shortly before the credentials expire
    (for the default hour: when 15 minutes remain, as botocore does; shorter sessions
    refresh after three quarters of their life, so a 900-second session does not assume
    the role on every call). Extra keyword arguments go to ``AssumeRole`` (``ExternalId``,
    ``Policy``, ``Tags``, ...). With a ``limiter``, each AssumeRole call goes through it
    as ``aws.sts.AssumeRole`` (waiting, key = region), so a fleet refreshing at once stays
    under the account's STS quota when that name is configured.

    An AccessDenied answer is raised as a ``ClientError`` whose message names the missing
    ``sts:AssumeRole`` permission and trust policy. A duration AWS would refuse is a
    :class:`~ratekeeper.ConfigError` before any call.
    """
    _check(role_arn, session_name, duration, assume_role_kwargs)
    base = base_session if base_session is not None else boto3.session.Session()
    region = base.region_name
    sts = base.client("sts", region_name=region)
    if limiter is not None:
        from ratekeeper.integrations.boto3 import instrument

        instrument(sts, limiter, prefix="aws", on_exceeded="wait")

    def refresh() -> dict[str, str]:
        try:
            answer = sts.assume_role(
                RoleArn=role_arn,
                RoleSessionName=session_name,
                DurationSeconds=duration,
                **assume_role_kwargs,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AccessDenied":
                raise _denied(exc, role_arn) from exc
            raise
        credentials = answer["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    botocore_session = botocore.session.Session()
    provider = _Provider(_AssumedRoleCredentials(refresh, duration))
    botocore_session.register_component(
        "credential_provider", botocore.credentials.CredentialResolver([provider])
    )
    return boto3.session.Session(botocore_session=botocore_session, region_name=region)
