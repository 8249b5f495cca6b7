"""A local AWS for the boto3 tests: moto's threaded server on 127.0.0.1, behind a WSGI
wrapper that answers chosen requests with an error (a throttle, AccessDenied) in the wire
format of the service's protocol, so botocore's real parser and retry loop run.

Nothing here reaches the internet: :func:`offline_environment` points every AWS setting at
dummy values and the local endpoint, and turns the instance-metadata lookup off.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

REGION = "us-east-1"
ACCOUNT = "123456789012"

StartResponse = Any  # WSGI's start_response callable
Environ = dict[str, Any]


@dataclass
class Fault:
    """Answer the next ``times`` requests for ``operation`` with ``code`` and ``status``."""

    operation: str
    code: str
    status: int
    times: int


def operation_of(environ: Environ, body: bytes) -> str:
    """The API operation of a request: ``X-Amz-Target`` (JSON) or ``Action`` (query)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    action = form.get("Action") or query.get("Action") or [""]
    return action[0]


def error_reply(
    environ: Environ, code: str, status: int
) -> tuple[str, list[tuple[str, str]], bytes]:
    """An error reply shaped like the service's protocol: awsJson for X-Amz-Target
    requests (SQS is query-compatible, so its code also rides in x-amzn-query-error),
    query XML otherwise."""
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    reason = f"{status} Error"
    if target:
        namespace = "com.amazonaws.sqs" if target.startswith("AmazonSQS") else "aws"
        body = json.dumps({"__type": f"{namespace}#{code}", "message": "Rate exceeded"})
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-error", f"{code};Sender"),
        ]
        return reason, headers, body.encode()
    xml = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>Rate exceeded</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    )
    return reason, [("Content-Type", "text/xml")], xml.encode()


class FaultInjector:
    """WSGI middleware: counts requests per operation and injects the queued faults."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def fail(
        self, operation: str, times: int = 1, code: str = "Throttling", status: int = 400
    ) -> None:
        with self._lock:
            self.faults.append(Fault(operation, code, status, times))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def _take(self, operation: str) -> Fault | None:
        with self._lock:
            self.requests[operation] += 1
            for fault in self.faults:
                if fault.operation == operation and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        fault = self._take(operation_of(environ, body))
        if fault is None:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        reason, headers, payload = error_reply(environ, fault.code, fault.status)
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{fault.status} {reason}", headers)
        return [payload]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class FaultyMotoServer(ThreadedMotoServer):
    """moto's threaded server on a free loopback port, with a :class:`FaultInjector`."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.injector = FaultInjector(DomainDispatcherApplication(create_backend_app))

    def _server_entry(self) -> None:
        # ThreadedMotoServer builds the same server around moto's bare app; this one
        # puts the injector in front.
        self._server = make_server(
            self._ip_address, self._port, self.injector, True, request_handler=_QuietHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"


@contextmanager
def offline_environment(endpoint: str) -> Iterator[None]:
    """Dummy credentials, the local endpoint for every service, no IMDS, no user config."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/ratekeeper-test-aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/ratekeeper-test-aws-credentials",
        }.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            patch.delenv(name, raising=False)
        yield


@contextmanager
def local_aws() -> Iterator[FaultyMotoServer]:
    """A running :class:`FaultyMotoServer` with the offline environment pointing at it."""
    server = FaultyMotoServer()
    server.start()
    try:
        with offline_environment(server.url):
            yield server
    finally:
        server.stop()


def publish_throttled(redis_url: str, endpoint: str, topic_arn: str) -> float:
    """Run in a separate process: publish once through an instrumented SNS client whose
    first attempt the local AWS throttles; returns the fraction of the rate then in force.

    The process shares nothing with its parent but the Redis server and the local AWS.
    """
    import boto3
    from botocore.config import Config

    from ratekeeper import DictSource, Limiter
    from ratekeeper.integrations.boto3 import Backoff, instrument
    from ratekeeper.storage.redis import RedisStorage

    with offline_environment(endpoint):
        storage = RedisStorage.from_url(redis_url)
        limiter = Limiter(DictSource(FLEET_LIMITS), storage)
        sns = boto3.client("sns", config=Config(retries={"mode": "standard"}))
        instrument(sns, limiter, backoff=Backoff(refresh=0.0))
        sns.publish(TopicArn=topic_arn, Message="hello")
        scale = limiter.peek("aws.sns.Publish", key=REGION).rate.amount / 10
        storage.close()
        return scale


# The fleet's shared quota in the two-process test: ten publishes per minute per region.
FLEET_LIMITS = {"aws.sns.*": {"rate": "10/minute", "algorithm": "token-bucket"}}
