"""Base models of every request and response body."""

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


def is_storable_text(value: str) -> bool:
    """PostgreSQL text holds neither NUL characters nor lone surrogates (JSON allows both)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# What PostgreSQL text can hold (is_storable_text), as the schema states it of free text.
STORABLE_TEXT_PATTERN = r"^[^\u0000\ud800-\udfff]*$"


def _storable_text_patterns(schema: dict[str, Any]) -> None:
    """Give every free-text string (no pattern, format or enum of its own) the pattern."""
    if schema.get("type") == "string" and not {"pattern", "format", "enum"} & schema.keys():
        schema["pattern"] = STORABLE_TEXT_PATTERN
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            _storable_text_patterns(option)
    if isinstance(schema.get("items"), dict):
        _storable_text_patterns(schema["items"])


class RequestModel(BaseModel):
    """A request body: unknown fields are rejected; no one sets `balance` or `role` by stealth."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        for field in schema.get("properties", {}).values():
            _storable_text_patterns(field)
        return schema

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        if isinstance(value, str) and not is_storable_text(value):
            raise ValueError("may not contain NUL characters or unpaired surrogates")
        return value


class PatchModel(RequestModel):
    """A partial update: omitted fields stay, `null` clears a field only where it may be empty."""

    required_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The schema says what the check below enforces: a field that may be omitted but
        not cleared takes no null."""
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        for name in cls.required_fields:
            field = schema.get("properties", {}).get(name, {})
            options = [o for o in field.get("anyOf", []) if o != {"type": "null"}]
            if len(options) == 1 and "anyOf" in field:
                del field["anyOf"]
                field.update(options[0])
            if field.get("default", ...) is None:
                del field["default"]
        return schema

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        for field in self.required_fields & self.model_fields_set:
            if getattr(self, field) is None:
                raise ValueError(f"{field} may not be null")
        return self


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _rfc3339(value: datetime) -> str:
    # isoformat is C, and pads the year to four digits as RFC 3339 wants (strftime's %Y
    # does not on Linux); twice as fast.
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(_rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""A moment, printed as RFC 3339 in UTC: 2026-11-22T14:50:09Z."""
