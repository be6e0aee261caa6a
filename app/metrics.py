"""Prometheus metrics of the service, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to serve an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

LOGIN_FAILURES = Counter("auth_login_failures_total", "Rejected password logins.")
LOGIN_THROTTLED = Counter("auth_login_throttled_total", "Logins refused by the throttle.")

OUTBOX_MESSAGES = Counter(
    "outbox_messages_total",
    "Outbox deliveries by topic and outcome (delivered, logged, retry, dead).",
    ["topic", "outcome"],
)
OUTBOX_PENDING = Gauge("outbox_pending", "Outbox messages waiting for delivery.")
RECONCILED = Counter(
    "reconcile_payments_total",
    "Payments with an unknown outcome looked up at the gateway, by result.",
    ["result"],
)
BILLING_INVOICES = Counter(
    "billing_invoices_total",
    "The worker's billing passes: invoices made, and attempts by result (paid, pending, "
    "retrying, uncollectible, errors).",
    ["result"],
)
WORKER_LAST_RUN = Gauge(
    "worker_last_run_timestamp_seconds", "When a worker task last completed.", ["task"]
)
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Webhook delivery attempts by outcome (succeeded, failed; dropped: nothing left to "
    "deliver to, the endpoint deleted, disabled or unsubscribed).",
    ["outcome"],
)
WEBHOOK_QUEUE_AGE = Gauge(
    "webhook_queue_age_seconds",
    "How long the oldest due webhook delivery has waited past its time (0: none late).",
)
GC_FROZEN_OBJECTS = Gauge(
    "python_gc_frozen_objects",
    "Objects built at startup (the libraries, the app) that the garbage collector leaves "
    "out of its scans (gc.freeze): without it, a full collection under load walks them all "
    "and stops the process for a fifth of a second.",
)
