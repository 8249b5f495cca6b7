"""Fleet-wide back-off: a throttle seen by one process slows every process sharing Redis."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ratekeeper import DictSource, Limiter, Rate, RateLimitExceeded
from ratekeeper.integrations.boto3 import instrument
from ratekeeper.storage.redis import RedisStorage
from tests.aws import FLEET_LIMITS, REGION, FaultyMotoServer, local_aws, publish_throttled

pytestmark = [pytest.mark.aws, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def aws() -> Iterator[FaultyMotoServer]:
    """A local moto server for this test."""
    with local_aws() as server:
        yield server


def test_a_throttle_in_one_process_slows_another(aws: FaultyMotoServer, redis_url: str) -> None:
    """Process A is throttled by SNS; process B's next calls run at half the rate."""
    topic = boto3.client("sns").create_topic(Name="orders")["TopicArn"]
    aws.injector.fail("Publish", code="Throttled", status=429)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        seen_by_a = pool.submit(publish_throttled, redis_url, aws.url, topic).result(timeout=120)
    assert seen_by_a == 0.5
    assert aws.injector.requests["Publish"] == 2  # the throttled attempt and its retry

    with RedisStorage.from_url(redis_url) as storage:
        limiter = Limiter(DictSource(FLEET_LIMITS), storage)
        sns = boto3.client("sns", config=Config(retries={"mode": "standard"}))
        instrument(sns, limiter, on_exceeded="raise")
        assert limiter.peek("aws.sns.Publish", key=REGION).rate == Rate(5, 60.0)
        admitted, refusal = publish_until_refused(sns, topic)
    # 10/minute, halved, minus what process A used: never the 9 left of the full rate.
    assert 3 <= admitted <= 5
    assert refusal.decision.rate == Rate(5, 60.0)


def publish_until_refused(sns: Any, topic: str) -> tuple[int, RateLimitExceeded]:
    for admitted in range(20):
        try:
            sns.publish(TopicArn=topic, Message="hello")
        except RateLimitExceeded as refusal:
            return admitted, refusal
    raise AssertionError("20 publishes admitted: the limit did not hold")
