"""Dependencies every router shares: settings, the gateway, the clock, the client's address
(the unit of work is `app.kit.routing.Unit`).

Every dependency is `async def`: FastAPI runs a plain `def` in a worker thread, and that
hand-off costs more than what these do (tests/test_conventions.py checks it)."""

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.gateway.base import Gateway
from app.kit.clock import Clock


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ClientAddress = Annotated[str, Depends(client_address)]


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]
