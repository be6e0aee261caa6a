"""Low-balance notices (SPEC §10): when a debit takes the balance from at-or-above the
threshold to below it, one email per notification address is put in the outbox, in the
debit's own transaction. Staying below sends nothing more; a credit that lifts the balance
back to the threshold re-arms the notice, because the next debit crosses again."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.finance.payment_settings import load_payment_settings
from app.money import format_amount
from app.worker.email import EMAIL_TOPIC
from app.worker.outbox import enqueue


def crossed_threshold(before_cents: int, after_cents: int, threshold_cents: int | None) -> bool:
    return threshold_cents is not None and before_cents >= threshold_cents > after_cents


async def queue_low_balance_notice(
    session: AsyncSession, account_id: str, balance_cents: int, threshold_cents: int
) -> None:
    account = await session.get_one(Account, account_id)
    settings = await load_payment_settings(session, account)
    balance, threshold = format_amount(balance_cents), format_amount(threshold_cents)
    subject = f"Low balance on {account.name}: {balance} USD"
    body = (
        f"The prepaid balance of {account.name} ({account.id}) is {balance} USD, below the "
        f"threshold of {threshold} USD set for low-balance notices.\n\n"
        "Orders paid from the balance are refused once it runs out. Deposit funds to keep "
        "them going; this notice is sent again only after the balance has been back at or "
        "above the threshold.\n"
    )
    for address in settings.notification_emails:
        await enqueue(
            session,
            EMAIL_TOPIC,
            {
                "kind": "low_balance",
                "account_id": account.id,
                "to": address,
                "subject": subject,
                "body": body,
                "balance": balance,
            },
        )
