"""Webhooks: signed events delivered to an account's endpoints, retried, and kept 30 days."""
