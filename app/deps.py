"""Dependencies every router shares: settings, the database session, the gateway, the clock.

Every dependency is `async def`: FastAPI runs a plain `def` in a worker thread, and that
hand-off costs more than what these do (tests/test_conventions.py checks it)."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.clock import Clock
from app.config import Settings
from app.gateway.base import Gateway


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    # For the hot path's single statements over a raw connection (app.db.raw_connection).
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # No commit here: services open and commit their own transactions.
    async with request.app.state.session_factory() as session:
        yield session


async def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
Session = Annotated[AsyncSession, Depends(get_session)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
ClientAddress = Annotated[str, Depends(client_address)]


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]
