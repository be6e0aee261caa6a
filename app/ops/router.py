"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.kit.db import is_disconnect
from app.kit.errors import ApiError
from app.kit.routing import ApiRoute, Unit
from app.kit.schemas import ResponseModel
from app.migrate import head_revision

router = APIRouter(tags=["operations"], route_class=ApiRoute)


class Health(ResponseModel):
    status: str


class Readiness(ResponseModel):
    status: str
    migration: str | None


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="The database is reachable and migrated")
async def readyz(unit: Unit) -> Readiness:
    try:
        row = await unit.fetchrow_atomic("SELECT version_num FROM alembic_version")
    except Exception as error:
        if not is_disconnect(error):
            raise
        raise ApiError(
            "not_ready", 503, "The database is not reachable.", headers={"Retry-After": "2"}
        ) from None
    current = row["version_num"] if row else None
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
