"""The throttle classifier: which AWS replies mean "slow down"."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.retries.standard import ThrottledRetryableChecker
from hypothesis import given
from hypothesis import strategies as st

from ratekeeper.integrations.boto3 import THROTTLING_CODES, is_throttling

pytestmark = pytest.mark.aws


def error(code: str, query_code: str | None = None) -> dict[str, Any]:
    detail = {"Code": code, "Message": "Rate exceeded"}
    if query_code is not None:
        detail["QueryErrorCode"] = query_code
    return {"Error": detail}


def test_covers_every_code_botocore_retries_as_throttling() -> None:
    """THROTTLING_CODES still includes botocore's own throttling list."""
    # botocore keeps the list private; reading it is the point of this test.
    botocore_codes = getattr(ThrottledRetryableChecker, "_THROTTLED_ERROR_CODES")  # noqa: B009
    assert set(botocore_codes) <= THROTTLING_CODES


@pytest.mark.parametrize(
    ("status", "parsed"),
    [
        (400, error("Throttling")),  # STS, IAM, CloudFormation: query XML
        (400, error("ThrottlingException")),  # JSON services
        (429, error("Throttled")),  # SNS
        (503, error("SlowDown")),  # S3
        (400, error("AWS.SimpleQueueService.Throttled", "RequestThrottled")),  # SQS
        (429, {}),  # any 429, even without a parsed body
        (400, error("KMSThrottlingException")),
    ],
)
def test_throttling_replies(status: int, parsed: dict[str, Any]) -> None:
    """Throttling codes, their query-compatible twins, SNS 429, S3 503 SlowDown, any 429."""
    assert is_throttling(status, parsed)


@pytest.mark.parametrize(
    ("status", "parsed"),
    [
        (200, {"ResponseMetadata": {}}),
        (400, error("ValidationError")),
        (403, error("AccessDenied")),
        (503, error("ServiceUnavailable")),
        (500, None),
        (400, {"Error": "Throttling"}),  # not the parsed shape botocore produces
    ],
)
def test_other_replies(status: int, parsed: dict[str, Any] | None) -> None:
    """Success, client errors and transient server errors are not throttles."""
    assert not is_throttling(status, parsed)


def test_codes_the_model_marks_as_throttling() -> None:
    """An error the operation's model marks retryable-throttling counts, given the model."""
    model = botocore.session.get_session().get_service_model("sagemaker-inference-router-runtime")
    operations = [
        model.operation_model(name)
        for name in model.operation_names
        if any(s.name == "ModelNotReadyException" for s in model.operation_model(name).error_shapes)
    ]
    assert operations
    reply = error("ModelNotReadyException")
    assert is_throttling(400, reply, operations[0])
    assert not is_throttling(400, reply)
    assert not is_throttling(400, error("ValidationError"), operations[0])


@given(st.integers(100, 399), st.sampled_from(sorted(THROTTLING_CODES)))
def test_no_success_is_ever_a_throttle(status: int, code: str) -> None:
    """Below 400 nothing is a throttle, whatever the body says."""
    assert not is_throttling(status, error(code))
