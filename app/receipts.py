"""PDF receipts of invoices and deposits: one layout, drawn with fpdf2's core fonts.

Core fonts draw Latin-1 only, and a receipt must never fail because a company is called
"株式会社" or "Łódź Sp. z o.o.": text is folded to what they can draw (accents dropped where
needed, "?" for the rest). A receipt names a card by brand and last 4 digits only: nothing
else of a card is ever stored.
"""

import asyncio
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from fastapi import Response
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from app.accounts.models import BillingInfo
from app.config import Settings
from app.kit.money import format_amount

_FONT = "Helvetica"
# Typographic quotes and dashes, and letters NFKD does not fold: their nearest Latin-1.
_TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": ",",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u20ac": "EUR",
        "\u0141": "L",
        "\u0142": "l",
        "\u0110": "D",
        "\u0111": "d",
        "\u0152": "OE",
        "\u0153": "oe",
        "\u0131": "i",
    }
)
_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express"}


@dataclass(frozen=True)
class Vendor:
    name: str
    address: str


@dataclass(frozen=True)
class ReceiptLine:
    description: str
    amount_cents: int


@dataclass(frozen=True)
class Receipt:
    title: str  # "Invoice", "Receipt", "Deposit receipt"
    number: str
    issued_at: datetime
    details: list[tuple[str, str]]  # label, value: the period, the status, dates
    billed_to: list[str]
    lines: list[ReceiptLine]
    total_cents: int
    payment_method: str


def card_label(brand: str | None, last4: str | None) -> str:
    """`Visa ending 4242`: all a receipt shows of a card."""
    if brand is None or last4 is None:
        return "Card"
    return f"{_BRANDS.get(brand, brand.title())} ending {last4}"


class BilledAccount(Protocol):
    """What a receipt shows of the account when its billing information leaves a gap."""

    @property
    def name(self) -> str: ...
    @property
    def company_name(self) -> str | None: ...
    @property
    def email(self) -> str: ...


def billed_to(account: BilledAccount, billing: BillingInfo | None) -> list[str]:
    """The account's billing information as address lines; the account itself when unset."""
    if billing is None:
        return [line for line in (account.company_name, account.name, account.email) if line]
    place = " ".join(part for part in (billing.postal_code, billing.city) if part)
    lines = [
        billing.company_name or account.company_name,
        billing.contact_name or account.name,
        billing.address_line1,
        billing.address_line2,
        ", ".join(part for part in (place, billing.region) if part),
        billing.country,
        billing.email or account.email,
        f"Tax ID: {billing.tax_id}" if billing.tax_id else None,
    ]
    return [line for line in lines if line]


def printable(text: str) -> str:
    """`text` as core fonts can draw it: Latin-1, accents folded, "?" for the rest."""
    chars = []
    for char in text.translate(_TYPOGRAPHY):
        if unicodedata.category(char).startswith("C"):  # controls, line breaks, unassigned
            chars.append(" ")
            continue
        try:
            char.encode("latin-1")
        except UnicodeEncodeError:
            folded = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore")
            chars.append(folded.decode("latin-1") or "?")
        else:
            chars.append(char)
    return "".join(chars)


def render_receipt(vendor: Vendor, receipt: Receipt) -> bytes:
    """The receipt as a one-or-more-page A4 PDF. CPU-bound: call it off the event loop."""
    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_title(printable(f"{receipt.title} {receipt.number}"))
    pdf.set_author(printable(vendor.name))
    pdf.set_creation_date(receipt.issued_at)
    pdf.add_page()

    def paragraph(text: str, size: float, style: str = "", height: float = 5) -> None:
        pdf.set_font(_FONT, style, size)
        pdf.multi_cell(
            0, height, printable(text), align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )

    paragraph(vendor.name, 14, "B", 7)
    paragraph(vendor.address, 9)
    pdf.ln(8)
    paragraph(receipt.title, 20, "B", 10)
    pdf.ln(2)
    for label, value in [("Number", receipt.number), *receipt.details]:
        pdf.set_font(_FONT, "B", 10)
        pdf.cell(40, 6, printable(label))
        pdf.set_font(_FONT, "", 10)
        pdf.multi_cell(0, 6, printable(value), align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    paragraph("Billed to", 10, "B", 6)
    for address_line in receipt.billed_to:
        paragraph(address_line, 10)
    pdf.ln(6)

    amount_width = 40
    description_width = pdf.epw - amount_width
    pdf.set_font(_FONT, "B", 10)
    pdf.cell(description_width, 7, "Description", border="B")
    pdf.cell(amount_width, 7, "Amount (USD)", border="B", align=Align.R)
    pdf.ln()
    pdf.set_font(_FONT, "", 10)
    for line in receipt.lines:
        description = printable(line.description)
        height = cast(
            float,
            pdf.multi_cell(
                description_width, 7, description, align=Align.L, dry_run=True, output="HEIGHT"
            ),
        )
        if pdf.will_page_break(height):  # keep a line and its amount on one page
            pdf.add_page()
        top = pdf.get_y()
        pdf.multi_cell(description_width, 7, description, align=Align.L)
        bottom = pdf.get_y()
        pdf.set_xy(pdf.l_margin + description_width, top)
        pdf.cell(amount_width, 7, format_amount(line.amount_cents), align=Align.R)
        pdf.set_xy(pdf.l_margin, bottom)
    pdf.set_font(_FONT, "B", 11)
    pdf.cell(description_width, 8, "Total", border="T")
    pdf.cell(
        amount_width, 8, f"{format_amount(receipt.total_cents)} USD", border="T", align=Align.R
    )
    pdf.ln(14)
    pdf.set_font(_FONT, "B", 10)
    pdf.cell(40, 6, "Payment method")
    pdf.set_font(_FONT, "", 10)
    pdf.multi_cell(
        0, 6, printable(receipt.payment_method), align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    pdf.ln(6)
    paragraph("All amounts are in US dollars (USD).", 8)
    return bytes(pdf.output())


def vendor_of(settings: Settings) -> Vendor:
    return Vendor(settings.vendor_name, settings.vendor_address)


async def render_pdf(settings: Settings, receipt: Receipt) -> bytes:
    """Render off the event loop: drawing a long receipt takes a while."""
    return await asyncio.to_thread(render_receipt, vendor_of(settings), receipt)


# HTTP: how routers answer with a receipt.

PDF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The PDF document",
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def pdf_response(pdf: bytes, name: str) -> Response:
    """Shown in the browser, saved as `{name}.pdf`; `name` is one of our ids."""
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
    )
