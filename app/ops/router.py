"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import Session
from app.errors import ApiError
from app.migrate import head_revision
from app.schemas import ResponseModel

router = APIRouter(tags=["operations"])


class Health(ResponseModel):
    status: str


class Readiness(ResponseModel):
    status: str
    migration: str | None


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="The database is reachable and migrated")
async def readyz(session: Session) -> Readiness:
    try:
        async with session.begin():
            current = await session.scalar(text("SELECT version_num FROM alembic_version"))
    except (SQLAlchemyError, OSError):
        raise ApiError("not_ready", 503, "The database is not reachable.") from None
    if current != head_revision():
        raise ApiError("not_ready", 503, "The database schema is not at the latest migration.")
    return Readiness(status="ready", migration=current)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
