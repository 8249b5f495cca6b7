"""Which AWS replies mean "slow down": the classifier behind the boto3 integration's back-off.

A pure function of the HTTP status, the parsed error and the operation model, so it can be
tested without a client. It must not import boto3 (only botocore's model types, for typing)
and must not decide anything about limits: it only says whether a reply is a throttle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.model import OperationModel

__all__ = ["THROTTLING_CODES", "is_throttling"]

# The codes botocore's retry handlers treat as throttling (botocore.retries.standard,
# _THROTTLED_ERROR_CODES, as of 1.44), kept here because that list is private; a test
# checks that this set still covers it. Added: SNS answers "Throttled" (HTTP 429), and the
# throttling codes that services relay when KMS throttles them.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        # not in botocore's list
        "Throttled",
        "ThrottledClientException",
        "KMSThrottlingException",
        "KMSThrottling",
        "KmsThrottled",
        "KmsThrottlingException",
    }
)


def is_throttling(
    status: int, parsed: Mapping[str, Any] | None, operation: OperationModel | None = None
) -> bool:
    """True when a reply with HTTP ``status`` and ``parsed`` body asks the caller to slow down.

    Throttling is: HTTP 429; an error code (or, for query-compatible JSON services such as
    SQS, its ``QueryErrorCode``) in :data:`THROTTLING_CODES`; or an error that the
    operation's model marks ``retryable: {throttling: true}``. S3's 503 ``SlowDown`` is
    covered by its code.
    """
    if status < 400:
        return False
    if status == 429:
        return True
    error = parsed.get("Error") if parsed else None
    if not isinstance(error, Mapping):
        return False
    codes = {error.get("Code"), error.get("QueryErrorCode")} - {None}
    if not codes:
        return False
    if not codes.isdisjoint(THROTTLING_CODES):
        return True
    return operation is not None and not codes.isdisjoint(_modelled_throttling(operation))


def _modelled_throttling(operation: OperationModel) -> set[str]:
    """The error codes the operation's model declares as throttling."""
    found = set()
    for shape in operation.error_shapes:
        retryable = shape.metadata.get("retryable")
        if isinstance(retryable, Mapping) and retryable.get("throttling"):
            error = shape.metadata.get("error")
            code = error.get("code") if isinstance(error, Mapping) else None
            found.add(code if isinstance(code, str) else shape.name)
    return found
