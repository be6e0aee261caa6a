"""Logging: one line per event, each carrying the request id it belongs to."""

import logging

from app.kit.request_context import current_request_id


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # httpx logs every request's full URL at INFO, and a webhook URL may carry a partner's
    # token in its query: our own lines name the endpoint by its id instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
