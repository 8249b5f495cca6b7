"""assume_role_session(): self-refreshing credentials, rate-limited AssumeRole, clear errors."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import freezegun
import pytest
from botocore.exceptions import ClientError

from ratekeeper import ConfigError, DictSource, Limiter, MemoryStorage
from ratekeeper.integrations._aws_credentials import refresh_windows
from ratekeeper.integrations.boto3 import assume_role_session
from ratekeeper.testing import ManualClock
from tests.aws import ACCOUNT, FaultyMotoServer, local_aws, offline_environment

pytestmark = pytest.mark.aws

ROLE = f"arn:aws:iam::{ACCOUNT}:role/publisher"
ASSUME = "aws.sts.AssumeRole"


@pytest.fixture(scope="module")
def aws() -> Iterator[FaultyMotoServer]:
    """One local moto server for the module."""
    with local_aws() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(aws: FaultyMotoServer) -> Iterator[None]:
    aws.injector.clear()
    with offline_environment(aws.url):
        yield
    aws.injector.clear()


@pytest.fixture
def shift() -> Iterator[Callable[[float], None]]:
    """Moves the clock of this process (botocore's and the local AWS's alike) forward."""
    start = datetime.datetime.now(datetime.timezone.utc)
    # pytest times each test with the same clock: leave its own readings alone.
    with freezegun.freeze_time(start, tick=True, ignore=["_pytest"]) as frozen:

        def move(seconds: float) -> None:
            frozen.tick(seconds)

        yield move


def counting_limiter() -> Limiter:
    clock = ManualClock(1000.0)
    return Limiter(DictSource({ASSUME: "100/hour"}), MemoryStorage(clock=clock), sleep=clock.sleep)


def assumed(limiter: Limiter) -> int:
    return 100 - limiter.peek(ASSUME, key="us-east-1").remaining


def test_session_acts_as_the_role(aws: FaultyMotoServer) -> None:
    """Calls made through the session use the assumed role's credentials."""
    session = assume_role_session(ROLE, session_name="publisher")
    identity = session.client("sts").get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/publisher/publisher"
    credentials = session.get_credentials()
    assert credentials is not None
    assert credentials.method == "assume-role"


def test_role_is_assumed_lazily_and_once_per_credential_life(
    aws: FaultyMotoServer, shift: Callable[[float], None]
) -> None:
    """An hour-long session assumes the role at first use, then 15 minutes before expiry."""
    limiter = counting_limiter()
    session = assume_role_session(ROLE, session_name="job", limiter=limiter)
    sqs = session.client("sqs")
    assert assumed(limiter) == 0
    for _ in range(3):
        sqs.list_queues()
    assert assumed(limiter) == 1
    shift(44 * 60)
    sqs.list_queues()
    assert assumed(limiter) == 1
    shift(2 * 60)  # 14 minutes left: inside botocore's advisory window
    sqs.list_queues()
    sqs.list_queues()
    assert assumed(limiter) == 2


def test_shortest_session_does_not_assume_on_every_call(
    aws: FaultyMotoServer, shift: Callable[[float], None]
) -> None:
    """A 900-second session refreshes after three quarters of its life, not per call."""
    assert refresh_windows(900) == (225, 150)
    assert refresh_windows(3600) == (900, 600)
    limiter = counting_limiter()
    session = assume_role_session(ROLE, session_name="job", duration=900, limiter=limiter)
    sqs = session.client("sqs")
    for _ in range(5):
        sqs.list_queues()
    assert assumed(limiter) == 1
    shift(900 - 225 + 1)
    sqs.list_queues()
    assert assumed(limiter) == 2


def test_assume_role_goes_through_the_limiter(aws: FaultyMotoServer) -> None:
    """AssumeRole waits for the limiter: its wait shows on the limiter's clock."""
    clock = ManualClock(1000.0)
    spec = {"rate": "1/minute", "algorithm": "token-bucket"}
    limiter = Limiter(DictSource({ASSUME: spec}), MemoryStorage(clock=clock), sleep=clock.sleep)
    limiter.hit(ASSUME, key="us-east-1")  # another process of the fleet just assumed it
    session = assume_role_session(ROLE, session_name="job", limiter=limiter)
    session.client("sqs").list_queues()
    assert clock() == pytest.approx(1060.0)


def test_access_denied_names_the_missing_permission(aws: FaultyMotoServer) -> None:
    """AccessDenied is re-raised naming sts:AssumeRole and the role's trust policy."""
    aws.injector.fail("AssumeRole", code="AccessDenied", status=403)
    session = assume_role_session(ROLE, session_name="job")
    with pytest.raises(ClientError) as caught:
        session.client("sqs").list_queues()
    message = str(caught.value)
    assert "AccessDenied" in message
    assert "sts:AssumeRole" in message
    assert "trust policy" in message
    assert ROLE in message
    assert caught.value.response["Error"]["Code"] == "AccessDenied"


def test_other_errors_pass_through_unchanged(aws: FaultyMotoServer) -> None:
    """An error other than AccessDenied reaches the caller as AWS sent it."""
    aws.injector.fail("AssumeRole", code="MalformedPolicyDocument", status=400)
    session = assume_role_session(ROLE, session_name="job")
    with pytest.raises(ClientError, match="MalformedPolicyDocument") as caught:
        session.client("sqs").list_queues()
    assert "trust policy" not in str(caught.value)


def test_base_session_and_extra_arguments_are_used(aws: FaultyMotoServer) -> None:
    """The role is assumed from base_session, with the extra AssumeRole arguments."""
    base = boto3.Session(region_name="eu-west-1")
    seen: list[dict[str, Any]] = []
    base.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **_: seen.append(params)
    )
    session = assume_role_session(
        ROLE, session_name="job", base_session=base, ExternalId="tenant-7"
    )
    assert session.region_name == "eu-west-1"
    session.client("sqs").list_queues()
    assert seen[0]["ExternalId"] == "tenant-7"
    assert seen[0]["DurationSeconds"] == 3600


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"duration": 899}, "duration=899"),
        ({"duration": 43_201}, "duration=43201"),
        ({"duration": 1800.0}, "whole seconds"),
        ({"session_name": "x"}, "session_name"),
        ({"DurationSeconds": 900}, "DurationSeconds"),
        ({"role_arn": "publisher"}, "role ARN"),
    ],
)
def test_bad_arguments_are_config_errors(arguments: dict[str, Any], words: str) -> None:
    """Values AWS would refuse raise ConfigError before any call, naming the value."""
    options: dict[str, Any] = {"session_name": "job", **arguments}
    role = options.pop("role_arn", ROLE)
    with pytest.raises(ConfigError, match=words):
        assume_role_session(role, **options)
