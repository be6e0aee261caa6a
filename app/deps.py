"""What every router's endpoints may be given from the app: settings, the gateway, the clock,
the client's address (the unit of work is `app.kit.routing.Unit`). `ApiRoute` provides each
(`app.kit.routing.Provided`)."""

from typing import Annotated

from fastapi import Request

from app.config import Settings
from app.gateway.base import Gateway
from app.kit.clock import Clock
from app.kit.routing import Provided


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Provided(get_settings_dep)]
ClientAddress = Annotated[str, Provided(client_address)]


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Provided(get_gateway)]


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Provided(get_clock)]
