"""What instrumenting a boto3 client costs: the event handler alone, and a whole call.

    python benchmarks/bench_boto3.py [--quick] [--markdown FILE] [--repeats N]

Two measurements, in one process and one run:

1. The ``before-call`` handler that ``instrument`` registers, called directly with the
   operation model and context botocore would pass, on a MemoryStorage limiter whose
   limit is huge (every call admitted): for a configured operation, and for one without a
   policy (a cached "not limited"). In microseconds per call.
2. ``sts.get_caller_identity()`` instrumented and not (two clients of one session,
   interleaved repeats), and their ratio: against moto's server on 127.0.0.1, and with a
   canned reply handed to botocore at ``before-send`` (everything but the socket:
   serializing, signing, parsing), where the handler's share is easiest to see. The
   target is an instrumented call costing at most 1.05 times an uninstrumented one.

Nothing leaves the machine: dummy credentials, a loopback endpoint, no instance metadata.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from _timing import Case, Result, emit, machine, markdown_table, measure
from ratekeeper import DictSource, Limiter
from ratekeeper.integrations.boto3 import instrument

HUGE = "1000000000/day"  # never reached in a run: every call is admitted
PACKAGES = ("ratekeeper", "boto3", "botocore", "moto")
HANDLER = "handler, configured operation"
HANDLER_UNLIMITED = "handler, operation without a policy"
PLAIN = "call over HTTP, not instrumented"
INSTRUMENTED = "call over HTTP, instrumented"
CANNED_PLAIN = "call with a canned reply, not instrumented"
CANNED_INSTRUMENTED = "call with a canned reply, instrumented"
REPLY = (
    b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    b"<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/bench</Arn>"
    b"<UserId>AIDABENCH</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
    b"<ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata>"
    b"</GetCallerIdentityResponse>"
)
TARGET = 1.05


def offline(endpoint: str) -> None:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )


def handler_cases() -> list[Case]:
    """The before-call handler, called the way botocore's emitter calls it."""
    limiter = Limiter(DictSource({"aws.sts.GetCallerIdentity": HUGE}))
    sts = boto3.Session(region_name="us-east-1").client("sts")
    handle = instrument(sts, limiter, backoff=None)
    handler = handle._hooks.before_call_counting
    model = sts.meta.service_model.operation_model("GetCallerIdentity")
    other = sts.meta.service_model.operation_model("GetSessionToken")
    context: dict[str, Any] = {"client_region": "us-east-1"}
    return [
        Case(HANDLER, "handler(model=model, context=context)", locals()),
        Case(HANDLER_UNLIMITED, "handler(model=other, context=context)", locals()),
    ]


def call_cases(calls: int) -> list[Case]:
    """Whole calls over HTTP to the local server, instrumented and not."""
    limiter = Limiter(DictSource({"aws.sts.*": HUGE}))
    session = boto3.Session(region_name="us-east-1")
    plain = session.client("sts")
    instrumented = session.client("sts")
    instrument(instrumented, limiter, backoff=None)
    for client in (plain, instrumented):
        client.get_caller_identity()  # opens the connection and loads the models
    return [
        Case(PLAIN, "plain.get_caller_identity()", {"plain": plain}, calls=calls),
        Case(INSTRUMENTED, "c.get_caller_identity()", {"c": instrumented}, calls=calls),
    ]


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def canned_reply(request: Any, **_: Any) -> AWSResponse:
    """A before-send handler: botocore uses the reply instead of the network."""
    return AWSResponse(
        request.url, 200, HTTPHeaders.from_dict({"Content-Type": "text/xml"}), _Body(REPLY)
    )


def canned_cases(calls: int) -> list[Case]:
    """Whole calls without the socket, instrumented and not."""
    limiter = Limiter(DictSource({"aws.sts.*": HUGE}))
    session = boto3.Session(region_name="us-east-1")
    plain = session.client("sts")
    instrumented = session.client("sts")
    instrument(instrumented, limiter, backoff=None)
    for client in (plain, instrumented):
        client.meta.events.register("before-send.sts.GetCallerIdentity", canned_reply)  # type: ignore[arg-type]
        client.get_caller_identity()
    return [
        Case(CANNED_PLAIN, "plain.get_caller_identity()", {"plain": plain}, calls=calls),
        Case(CANNED_INSTRUMENTED, "c.get_caller_identity()", {"c": instrumented}, calls=calls),
    ]


def ratio_line(label: str, by_name: Mapping[str, Result], plain: str, instrumented: str) -> str:
    ratio = by_name[instrumented].median / by_name[plain].median
    floor = by_name[instrumented].low / by_name[plain].low
    added = (by_name[instrumented].median - by_name[plain].median) / 1000
    verdict = "met" if ratio <= TARGET else "NOT met"
    return (
        f"- {label}: instrumented / not = **{ratio:.3f}x** by medians, {floor:.3f}x by "
        f"minimums (target <= {TARGET}x: {verdict}); medians differ by {added:+.1f} µs."
    )


def derived_line(by_name: Mapping[str, Result]) -> str:
    """The ratio the handler's own cost implies: steadier than two noisy call medians."""
    handler = by_name[HANDLER].median
    call = by_name[PLAIN].median
    return (
        f"- implied by the handler's median over HTTP: (call + handler) / call = "
        f"**{(call + handler) / call:.4f}x**"
    )


def report(results: Sequence[Result], repeats: int) -> str:
    by_name = {result.case.name: result for result in results}
    info = "\n".join(f"- {label}: {value}" for label, value in machine(PACKAGES))
    rows = [
        [
            result.case.name,
            f"{result.median / 1000:.2f}",
            f"{result.low / 1000:.2f}",
            f"{result.high / 1000:.2f}",
            str(result.calls),
        ]
        for result in results
    ]
    table = markdown_table(
        ["case", "median µs", "min µs", "max µs", "calls/repeat"], rows, right=(1, 2, 3, 4)
    )
    summary = "\n".join(
        [
            ratio_line("over HTTP", by_name, PLAIN, INSTRUMENTED),
            ratio_line("canned reply", by_name, CANNED_PLAIN, CANNED_INSTRUMENTED),
            derived_line(by_name),
        ]
    )
    method = (
        f"Median of {repeats} interleaved repeats; nothing subtracted (each figure includes "
        "one loop iteration). Calls go to moto's threaded server on 127.0.0.1 in the same "
        "process, so the server's own work is in both call rows."
    )
    return "\n\n".join([info, method, table, summary])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations: a CI smoke run")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report")
    parser.add_argument("--repeats", type=int, help="repeats per case (default 15, quick 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        offline(f"http://{host}:{port}")
        cases = [
            *handler_cases(),
            *canned_cases(50 if args.quick else 2000),
            *call_cases(20 if args.quick else 200),
        ]
        results = measure(cases, repeats=repeats, target_ns=2_000_000 if args.quick else 50_000_000)
    finally:
        server.stop()
    text = report(results, repeats)
    emit(text, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
