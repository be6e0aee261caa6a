"""Low-balance notices (SPEC §10): when a debit takes the balance from at-or-above the
threshold to below it, one email per notification address is put in the outbox, in the
debit's own transaction. Staying below sends nothing more; a credit that lifts the balance
back to the threshold re-arms the notice, because the next debit crosses again."""

import asyncpg

from app.money import format_amount
from app.worker.email import EMAIL_TOPIC
from app.worker.outbox import enqueue


def crossed_threshold(before_cents: int, after_cents: int, threshold_cents: int | None) -> bool:
    return threshold_cents is not None and before_cents >= threshold_cents > after_cents


# The account and where its notices go: the notification emails, or (NULL) the account's
# own email, as in payment_settings.settings_of.
_RECIPIENTS = """
    SELECT a.id, a.name,
           COALESCE(s.notification_emails, ARRAY[a.email]::varchar[]) AS emails
    FROM account a LEFT JOIN finance_settings s ON s.account_id = a.id
    WHERE a.id = $1
"""


async def queue_low_balance_notice(
    conn: asyncpg.Connection, account_id: str, balance_cents: int, threshold_cents: int
) -> None:
    """Inside the debit's transaction, on its connection."""
    account = await conn.fetchrow(_RECIPIENTS, account_id)
    name = account["name"]
    balance, threshold = format_amount(balance_cents), format_amount(threshold_cents)
    subject = f"Low balance on {name}: {balance} USD"
    body = (
        f"The prepaid balance of {name} ({account_id}) is {balance} USD, below the "
        f"threshold of {threshold} USD set for low-balance notices.\n\n"
        "Orders paid from the balance are refused once it runs out. Deposit funds to keep "
        "them going; this notice is sent again only after the balance has been back at or "
        "above the threshold.\n"
    )
    for address in account["emails"]:
        await enqueue(
            conn,
            EMAIL_TOPIC,
            {
                "kind": "low_balance",
                "account_id": account_id,
                "to": address,
                "subject": subject,
                "body": body,
                "balance": balance,
            },
        )
