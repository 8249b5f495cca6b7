"""instrument() against real HTTP: moto's server with injected throttles, botocore's own
retry loop, sessions, resources and botocore's nested STS clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

from ratekeeper import DictSource, Limiter, MemoryStorage, Rate
from ratekeeper.integrations.boto3 import Backoff, instrument
from ratekeeper.testing import ManualClock
from tests.aws import ACCOUNT, FaultyMotoServer, local_aws, offline_environment

pytestmark = pytest.mark.aws

RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 3})


@pytest.fixture(scope="module")
def aws() -> Iterator[FaultyMotoServer]:
    """One local moto server for the module."""
    with local_aws() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(aws: FaultyMotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # botocore's jittered back-off would really sleep up to a second per retry: the
    # retries themselves are what is under test, not their pacing.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    aws.injector.clear()
    with offline_environment(aws.url):
        yield
    aws.injector.clear()


def make(limits: dict[str, Any]) -> Limiter:
    clock = ManualClock(1000.0)
    return Limiter(DictSource(limits), MemoryStorage(clock=clock), sleep=clock.sleep)


def used(limiter: Limiter, name: str, capacity: int = 100) -> int:
    return capacity - limiter.peek(name, key="us-east-1").remaining


@pytest.mark.parametrize(("count", "expected"), [("call", 1), ("attempt", 3)])
def test_two_throttles_then_success(aws: FaultyMotoServer, count: Any, expected: int) -> None:
    """Two throttled attempts then a success count one call, or three attempts."""
    limiter = make({"aws.sts.*": "100/minute"})
    sts = boto3.client("sts", config=RETRIES)
    instrument(sts, limiter, count=count, backoff=None)
    aws.injector.fail("GetCallerIdentity", times=2)
    answer = sts.get_caller_identity()
    assert answer["Account"] == ACCOUNT
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert aws.injector.requests["GetCallerIdentity"] == 3
    assert used(limiter, "aws.sts.GetCallerIdentity") == expected


def test_attempts_are_admitted_before_signing(aws: FaultyMotoServer) -> None:
    """With count="attempt" every wait happens before the request is signed."""
    order: list[str] = []
    clock = ManualClock(1000.0)

    def sleep(seconds: float) -> None:
        order.append("wait")
        clock.sleep(seconds)

    spec = {"rate": "1/second", "algorithm": "token-bucket"}
    limiter = Limiter(DictSource({"aws.sts.*": spec}), MemoryStorage(clock=clock), sleep=sleep)
    sts = boto3.client("sts", config=RETRIES)
    instrument(sts, limiter, count="attempt", backoff=None)
    sts.meta.events.register("before-sign.sts.*", lambda **_: order.append("sign"))
    aws.injector.fail("GetCallerIdentity", times=2)
    sts.get_caller_identity()
    assert order == ["sign", "wait", "sign", "wait", "sign"]
    assert clock() == pytest.approx(1002.0)


@pytest.mark.parametrize(
    ("service", "operation", "code", "status"),
    [
        ("sts", "GetCallerIdentity", "Throttling", 400),
        ("sns", "ListTopics", "Throttled", 429),
        ("sqs", "ListQueues", "RequestThrottled", 400),
    ],
)
def test_throttling_reply_lowers_the_effective_rate(
    aws: FaultyMotoServer, service: Any, operation: str, code: str, status: int
) -> None:
    """A throttle in each protocol (query XML, SNS 429, SQS JSON) halves the rate."""
    limiter = make({"aws.*": "10/second"})
    client = boto3.client(service, config=RETRIES)
    instrument(client, limiter, backoff=Backoff(refresh=0.0))
    aws.injector.fail(operation, code=code, status=status)
    method = next(m for m, api in client.meta.method_to_api_mapping.items() if api == operation)
    getattr(client, method)()
    name = f"aws.{service}.{operation}"
    assert limiter.peek(name, key="us-east-1").rate == Rate(5, 1.0)


def test_throttles_past_the_retries_still_lower_the_rate(aws: FaultyMotoServer) -> None:
    """When botocore gives up on throttles the ClientError surfaces and the rate is down."""
    limiter = make({"aws.sts.*": "10/second"})
    sts = boto3.client("sts", config=RETRIES)
    instrument(sts, limiter, backoff=Backoff(refresh=0.0))
    aws.injector.fail("GetCallerIdentity", times=5)
    with pytest.raises(ClientError, match="Throttling"):
        sts.get_caller_identity()
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").rate == Rate(5, 1.0)


def test_resource_calls_are_limited(aws: FaultyMotoServer) -> None:
    """A resource's actions go through its client: each API call is counted once."""
    limiter = make({"aws.sqs.*": "100/minute"})
    boto3.client("sqs").create_queue(QueueName="jobs")
    sqs = boto3.resource("sqs")
    instrument(sqs, limiter, backoff=None)
    sqs.get_queue_by_name(QueueName="jobs").send_message(MessageBody="hello")
    assert used(limiter, "aws.sqs.GetQueueUrl") == 1
    assert used(limiter, "aws.sqs.SendMessage") == 1


def test_session_reaches_the_sts_client_botocore_creates(
    aws: FaultyMotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role profile's AssumeRole, made by botocore's own STS client, is limited."""
    config = tmp_path / "config"
    config.write_text(
        "[profile base]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
        "[profile worker]\nrole_arn = arn:aws:iam::123456789012:role/worker\n"
        "source_profile = base\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    limiter = make({"aws.sts.AssumeRole": "100/minute"})
    session = boto3.Session(profile_name="worker", region_name="us-east-1")
    instrument(session, limiter, backoff=None)
    session.client("sqs").list_queues()
    assert used(limiter, "aws.sts.AssumeRole") == 1
