"""instrument(): limit names, keys, wait and raise, options, throttle feedback (Stubber)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

import ratekeeper.integrations
from ratekeeper import (
    AsyncLimiter,
    ConfigError,
    DictSource,
    Limiter,
    MemoryStorage,
    Rate,
    RateLimitExceeded,
)
from ratekeeper.integrations._aws_events import Hooks
from ratekeeper.integrations.boto3 import Backoff, instrument
from ratekeeper.testing import ManualClock
from tests.aws import offline_environment

pytestmark = pytest.mark.aws

IDENTITY = {"UserId": "AIDA", "Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/t"}


@pytest.fixture(autouse=True)
def _offline() -> Iterator[None]:
    # A closed loopback port: a call that escaped the Stubber fails instead of leaving.
    with offline_environment("http://127.0.0.1:9"):
        yield


def make(limits: dict[str, Any]) -> tuple[Limiter, ManualClock]:
    clock = ManualClock(1000.0)
    limiter = Limiter(DictSource(limits), MemoryStorage(clock=clock), sleep=clock.sleep)
    return limiter, clock


def stubbed_sts(region: str = "us-east-1", replies: int = 5) -> tuple[Any, Stubber]:
    client = boto3.Session(region_name=region).client("sts")
    stubber = Stubber(client)
    for _ in range(replies):
        stubber.add_response("get_caller_identity", IDENTITY)
    stubber.activate()
    return client, stubber


def answer_caller_identity_with(sts: Any, code: str, status: int) -> None:
    """Call GetCallerIdentity on ``sts`` with AWS answering the error ``code``."""
    with Stubber(sts) as stubber:
        stubber.add_client_error(
            "get_caller_identity", service_error_code=code, http_status_code=status
        )
        with pytest.raises(ClientError):
            sts.get_caller_identity()


def test_limit_name_is_prefix_service_id_and_operation() -> None:
    """A call is limited under aws.<hyphenated service id>.<Operation>."""
    limiter, _ = make({"aws.cloudwatch-logs.*": "1/minute"})
    logs = boto3.Session(region_name="us-east-1").client("logs")
    instrument(logs, limiter, on_exceeded="raise")
    with Stubber(logs) as stubber:
        for _ in range(2):
            stubber.add_response("describe_log_groups", {"logGroups": []})
        logs.describe_log_groups()
        with pytest.raises(RateLimitExceeded) as caught:
            logs.describe_log_groups()
    assert caught.value.decision.limit_name == "aws.cloudwatch-logs.DescribeLogGroups"
    assert caught.value.decision.key == "us-east-1"


@pytest.mark.parametrize(
    ("client_name", "service_id"),
    [
        ("logs", "cloudwatch-logs"),
        ("stepfunctions", "sfn"),
        ("apigateway", "api-gateway"),
        ("events", "eventbridge"),
        ("elbv2", "elastic-load-balancing-v2"),
    ],
)
def test_service_part_is_botocore_service_id(client_name: Any, service_id: str) -> None:
    """The service part is botocore's hyphenated service id, not the boto3 client name."""
    limiter, _ = make({f"aws.{service_id}.*": "1/minute"})
    model = boto3.Session(region_name="us-east-1").client(client_name).meta.service_model
    operation = model.operation_model(model.operation_names[0])
    hooks = Hooks(limiter, "aws", "raise", None, None)
    assert hooks.limit_name(operation) == f"aws.{service_id}.{operation.name}"
    assert Hooks(limiter, "billing", "raise", None, None).limit_name(operation) is None


def test_operation_without_a_policy_is_not_limited() -> None:
    """Only configured operations are limited: others never block or raise."""
    limiter, _ = make({"aws.sns.*": "1/minute"})
    sts, _ = stubbed_sts(replies=5)
    instrument(sts, limiter, on_exceeded="raise")
    assert all(sts.get_caller_identity()["Account"] for _ in range(5))


def test_most_specific_glob_wins() -> None:
    """aws.sts.* beats aws.*, and the decision carries the operation's own name."""
    limiter, _ = make({"aws.*": "100/minute", "aws.sts.*": "2/minute"})
    sts, _ = stubbed_sts()
    instrument(sts, limiter, on_exceeded="raise")
    sts.get_caller_identity()
    decision = limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1")
    assert decision.rate == Rate(2, 60.0)
    assert decision.remaining == 1


def test_regions_do_not_share_a_limit_by_default() -> None:
    """The default key is the client's region."""
    limiter, _ = make({"aws.sts.*": "1/minute"})
    east, _ = stubbed_sts("us-east-1")
    west, _ = stubbed_sts("eu-west-1")
    for client in (east, west):
        instrument(client, limiter, on_exceeded="raise")
        client.get_caller_identity()
    with pytest.raises(RateLimitExceeded):
        east.get_caller_identity()


def test_a_string_or_callable_key_overrides_the_region() -> None:
    """key= replaces the region: a constant shares one limit, a callable sees the call."""
    limiter, _ = make({"aws.sts.*": "1/minute"})
    seen: list[tuple[str, str, str]] = []

    def account_key(service: str, operation: str, region: str) -> str:
        seen.append((service, operation, region))
        return "account-1"

    east, _ = stubbed_sts("us-east-1")
    west, _ = stubbed_sts("eu-west-1")
    instrument(east, limiter, on_exceeded="raise", key=account_key)
    instrument(west, limiter, on_exceeded="raise", key="account-1")
    east.get_caller_identity()
    with pytest.raises(RateLimitExceeded):
        west.get_caller_identity()
    assert seen == [("sts", "GetCallerIdentity", "us-east-1")]


def test_source_changes_apply_to_the_next_call() -> None:
    """A policy added, changed or deleted in the source is obeyed at the next call."""
    limiter, _ = make({})
    source = limiter.source
    assert isinstance(source, DictSource)
    sts, _ = stubbed_sts(replies=6)
    instrument(sts, limiter, on_exceeded="raise")
    sts.get_caller_identity()  # no policy yet: not counted
    source.set("aws.sts.GetCallerIdentity", "1/minute")
    sts.get_caller_identity()
    with pytest.raises(RateLimitExceeded):
        sts.get_caller_identity()
    source.set("aws.sts.GetCallerIdentity", "3/minute")
    sts.get_caller_identity()
    source.delete("aws.sts.GetCallerIdentity")
    sts.get_caller_identity()
    sts.get_caller_identity()


def test_wait_mode_paces_calls() -> None:
    """on_exceeded="wait" sleeps until the limit admits the call."""
    limiter, clock = make({"aws.sts.*": {"rate": "1/second", "algorithm": "token-bucket"}})
    sts, _ = stubbed_sts()
    instrument(sts, limiter)
    for _ in range(3):
        sts.get_caller_identity()
    assert clock() == pytest.approx(1002.0)


def test_wait_longer_than_max_wait_raises_without_waiting() -> None:
    """A wait past max_wait raises RateLimitExceeded at once."""
    limiter, clock = make({"aws.sts.*": {"rate": "1/minute", "algorithm": "token-bucket"}})
    sts, _ = stubbed_sts()
    instrument(sts, limiter, max_wait=5.0)
    sts.get_caller_identity()
    with pytest.raises(RateLimitExceeded) as caught:
        sts.get_caller_identity()
    assert caught.value.decision.retry_after == pytest.approx(60.0, abs=1.0)
    assert clock() == 1000.0


def test_stubbed_throttle_lowers_the_effective_rate() -> None:
    """A throttling reply halves the operation's effective rate, as peek shows."""
    limiter, _ = make({"aws.sts.*": "10/second"})
    sts = boto3.Session(region_name="us-east-1").client("sts")
    instrument(sts, limiter, backoff=Backoff(refresh=0.0))
    answer_caller_identity_with(sts, "Throttling", 400)
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").rate == Rate(5, 1.0)
    assert limiter.peek("aws.sts.AssumeRole", key="us-east-1").rate == Rate(10, 1.0)


@pytest.mark.parametrize("adapt_first", [True, False])
def test_a_service_specific_adapt_wins_before_or_after_instrument(adapt_first: bool) -> None:
    """limiter.adapt("aws.sts.*") gives one service its own back-off, whatever the order."""
    limiter, _ = make({"aws.sts.*": "10/second"})
    sts = boto3.Session(region_name="us-east-1").client("sts")
    if adapt_first:
        limiter.adapt("aws.sts.*", Backoff(decrease=0.8, refresh=0.0))
    instrument(sts, limiter)
    if not adapt_first:
        limiter.adapt("aws.sts.*", Backoff(decrease=0.8, refresh=0.0))
    answer_caller_identity_with(sts, "Throttling", 400)
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").rate == Rate(8, 1.0)


def test_other_errors_leave_the_rate_alone() -> None:
    """A non-throttling error does not slow anything down."""
    limiter, _ = make({"aws.sts.*": "10/second"})
    sts = boto3.Session(region_name="us-east-1").client("sts")
    instrument(sts, limiter, backoff=Backoff(refresh=0.0))
    answer_caller_identity_with(sts, "AccessDenied", 403)
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").rate == Rate(10, 1.0)


def test_without_backoff_throttles_are_ignored() -> None:
    """backoff=None keeps the configured rate whatever AWS answers."""
    limiter, _ = make({"aws.sts.*": "10/second"})
    sts = boto3.Session(region_name="us-east-1").client("sts")
    instrument(sts, limiter, backoff=None)
    answer_caller_identity_with(sts, "Throttling", 400)
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").rate == Rate(10, 1.0)


def test_uninstrument_stops_limiting() -> None:
    """After uninstrument() (or leaving the with block) calls are no longer counted."""
    limiter, _ = make({"aws.sts.*": "1/minute"})
    sts, _ = stubbed_sts()
    with instrument(sts, limiter, on_exceeded="raise") as handle:
        states = [handle.active]
        sts.get_caller_identity()
    states.append(handle.active)
    assert states == [True, False]
    sts.get_caller_identity()
    handle.uninstrument()  # idempotent
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").remaining == 0


def test_instrumenting_twice_is_idempotent_or_refused() -> None:
    """Same settings: the same handle, counted once; other settings: a ConfigError."""
    limiter, _ = make({"aws.sts.*": "2/minute"})
    sts, _ = stubbed_sts()
    first = instrument(sts, limiter, on_exceeded="raise")
    assert instrument(sts, limiter, on_exceeded="raise") is first
    with pytest.raises(ConfigError, match="already instrumented with prefix 'aws'"):
        instrument(sts, limiter, on_exceeded="wait")
    sts.get_caller_identity()
    assert limiter.peek("aws.sts.GetCallerIdentity", key="us-east-1").remaining == 1
    first.uninstrument()
    second = instrument(sts, limiter, count="attempt")
    assert second is not first
    other = instrument(sts, limiter, prefix="billing")
    assert other.prefix == "billing"


def test_session_covers_clients_created_afterwards_only() -> None:
    """A session's later clients are limited; clients made before keep no handlers."""
    limiter, _ = make({"aws.sts.*": "1/minute"})
    session = boto3.Session(region_name="us-east-1")
    before = session.client("sts")
    handle = instrument(session, limiter, on_exceeded="raise")
    after = session.client("sts")
    for client in (before, after):
        stubber = Stubber(client)
        for _ in range(2):
            stubber.add_response("get_caller_identity", IDENTITY)
        stubber.activate()
    before.get_caller_identity()
    before.get_caller_identity()
    after.get_caller_identity()
    with pytest.raises(RateLimitExceeded):
        after.get_caller_identity()
    handle.uninstrument()
    after.get_caller_identity()  # its copied handlers are switched off too


def test_bad_options_are_config_errors() -> None:
    """Wrong option values raise ConfigError naming the option and the value."""
    limiter, _ = make({})
    sts, _ = stubbed_sts()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"count": "request"}, "count"),
        ({"on_exceeded": "block"}, "on_exceeded"),
        ({"prefix": ""}, "prefix"),
        ({"prefix": "aws."}, "prefix"),
        ({"max_wait": -1}, "max_wait"),
        ({"key": 42}, "key"),
        ({"backoff": 0.5}, "backoff"),
    ]
    for options, word in bad:
        with pytest.raises(ConfigError, match=word):
            instrument(sts, limiter, **options)


def test_wrong_target_or_limiter_type_is_a_type_error() -> None:
    """Only clients, sessions and resources with a sync Limiter can be instrumented."""
    limiter, _ = make({})
    sts, _ = stubbed_sts()
    with pytest.raises(TypeError, match="boto3 client"):
        instrument(object(), limiter)
    with pytest.raises(TypeError, match="AsyncLimiter"):
        instrument(sts, AsyncLimiter())  # type: ignore[arg-type]


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without boto3 the module raises ImportError naming ratekeeper[boto3]."""
    # The fresh import rebinds the package attribute too; put the original back after.
    monkeypatch.setattr(ratekeeper, "integrations", ratekeeper.integrations)
    for name in [m for m in sys.modules if m.startswith("ratekeeper.integrations.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "boto3.session", None)
    with pytest.raises(ImportError, match=r"ratekeeper\[boto3\]"):
        importlib.import_module("ratekeeper.integrations.boto3")


def test_import_ratekeeper_does_not_import_boto3() -> None:
    """import ratekeeper (and its integrations package) loads neither boto3 nor botocore."""
    code = (
        "import sys, ratekeeper, ratekeeper.integrations\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
