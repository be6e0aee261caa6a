"""The background half of the service: the outbox, email delivery, the reconciler and the
schedule that runs them (in the API process by default, or as `billing worker`)."""
