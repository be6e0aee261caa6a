"""Notices of money held, written here when they are sent (the database queues them as data).

Low-balance notices (SPEC §10): when a debit takes the balance from at-or-above the
threshold to below it, one email per notification address is put in the outbox, in the
debit's own transaction (by the ledger function, `queue_low_balance_notice`). Staying below
sends nothing more; a credit that lifts the balance back to the threshold re-arms the
notice, because the next debit crosses again.

Automatic top-up suspended (SPEC §14): a declined charge or a removed card suspends the rule,
and one email per notification address says so (`suspend_auto_top_up`)."""

from typing import Any

from app.kit.money import format_amount


def low_balance_email(payload: dict[str, Any]) -> tuple[str, str]:
    """The subject and body of a low-balance notice queued by the ledger."""
    name, account_id = payload["account_name"], payload["account_id"]
    balance = format_amount(payload["balance_cents"])
    threshold = format_amount(payload["threshold_cents"])
    subject = f"Low balance on {name}: {balance} USD"
    body = (
        f"The prepaid balance of {name} ({account_id}) is {balance} USD, below the "
        f"threshold of {threshold} USD set for low-balance notices.\n\n"
        "Orders paid from the balance are refused once it runs out. Deposit funds to keep "
        "them going; this notice is sent again only after the balance has been back at or "
        "above the threshold.\n"
    )
    return subject, body


_SUSPENDED_BECAUSE = {
    "card_declined": "the card on file declined the automatic top-up",
    "no_card_on_file": "there is no card on file to charge",
}


def auto_top_up_suspended_email(payload: dict[str, Any]) -> tuple[str, str]:
    """The subject and body of the notice that automatic top-up stopped."""
    name, account_id = payload["account_name"], payload["account_id"]
    because = _SUSPENDED_BECAUSE.get(payload["reason"], payload["reason"])
    subject = f"Automatic top-up suspended on {name}"
    body = (
        f"Automatic top-up of the prepaid balance of {name} ({account_id}) is suspended: "
        f"{because}.\n\n"
        "Nothing more will be charged until a finance user or an admin saves the automatic "
        "top-up settings again (PATCH /v1/finance/settings), after updating the card if "
        "needed. Orders paid from the balance are refused once it runs out.\n"
    )
    return subject, body
