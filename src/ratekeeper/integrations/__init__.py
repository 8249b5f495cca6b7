"""Integrations of ratekeeper with other libraries, one module each.

``ratekeeper.integrations.boto3`` wraps boto3 clients, sessions and resources;
``ratekeeper.integrations.prometheus`` and ``ratekeeper.integrations.opentelemetry`` export
decisions as metrics. Importing this package imports none of them: each module needs its
own extra (``ratekeeper[boto3]``, ``ratekeeper[prometheus]``, ``ratekeeper[otel]``).
"""
