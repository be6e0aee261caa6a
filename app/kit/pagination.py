"""Cursor pagination: `limit` and `starting_after`, newest first, `{"data", "has_more"}`."""

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, tuple_

from app.kit.db import UnitOfWork
from app.kit.errors import ApiError
from app.kit.ids import ID_PATTERN

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    data: list[ItemT]
    has_more: bool


@dataclass(frozen=True)
class PageRequest:
    limit: int
    starting_after: str | None


async def _page_request(
    limit: Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100.")] = 20,
    starting_after: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="The id of the last item of the previous page."),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, starting_after=starting_after)


def _not_an_item() -> ApiError:
    # Like any id of another account's, or none at all: it does not exist for the caller.
    return ApiError("not_found", 404, "starting_after is not an item of this list.")


PageParams = Annotated[PageRequest, Depends(_page_request)]


RowT = TypeVar("RowT")


async def paginate(
    unit: UnitOfWork, query: Select[RowT], model: Any, page: PageRequest
) -> tuple[list[RowT], bool]:
    """Run `query` (already scoped to the caller's account) one page at a time.

    Ordered by (created_at, id) descending; the cursor must be an item of the same query,
    so another account's id is as unknown as a made-up one.
    """
    if page.starting_after is not None:
        cursor = (
            await unit.session.execute(
                query.with_only_columns(model.created_at, model.id).where(
                    model.id == page.starting_after
                )
            )
        ).one_or_none()
        if cursor is None:
            raise _not_an_item()
        query = query.where(tuple_(model.created_at, model.id) < tuple_(cursor[0], cursor[1]))
    rows = list(
        (
            await unit.session.scalars(
                query.order_by(model.created_at.desc(), model.id.desc()).limit(page.limit + 1)
            )
        ).all()
    )
    return rows[: page.limit], len(rows) > page.limit
