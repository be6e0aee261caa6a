"""Shared plumbing below every domain: database, errors, money, ids, pagination, idempotency,
the outbox and the two-phase payment. Nothing here imports a domain package."""
