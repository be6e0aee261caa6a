"""States and kinds: each is a `StrEnum` defined once, in the package that owns it (an
order's status in app.orders). Here is how a table stores one and writes its CHECK
constraint from it, so the column, the constraint, the schemas and the rules name the same
values."""

from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

S = TypeVar("S", bound=StrEnum)


def sql_in(column: str, states: type[StrEnum]) -> str:
    """`column IN ('a', 'b')` with every value of `states` in order: a CHECK constraint's
    text (the very text the migrations wrote, so no migration follows a new spelling)."""
    values = [state.value for state in states]
    assert all("'" not in value for value in values)
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class StateColumn(TypeDecorator[S]):
    """A VARCHAR column holding a state's value, read back as the enum member."""

    impl = String
    cache_ok = True

    def __init__(self, states: type[S], length: int) -> None:
        super().__init__(length)
        self.states = states

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return value.value if isinstance(value, StrEnum) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> S | None:
        return None if value is None else self.states(value)
