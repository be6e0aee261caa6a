"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: open a page, wait
until it shows what a user would see, and keep every request it made and every error it
reported (a request blocked by the page's Content-Security-Policy among them)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-extensions",
    "--disable-sync",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
]


@dataclass
class Page:
    """One tab: what it requested and what went wrong in it, as the browser reported."""

    browser: Browser
    target_id: str
    session_id: str
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 20.0) -> Any:
        """The first truthy value of `expression`, polled while the page works."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    # Not yet, while the page is still being replaced or built.
                    value = await self.evaluate(
                        f"(() => {{ try {{ return ({expression}); }} catch {{ return null; }} }})()"
                    )
                    if value:
                        return value
                    await asyncio.sleep(0.05)
        except TimeoutError:
            text = await self.evaluate("document.body ? document.body.innerText : ''")
            raise AssertionError(
                f"{expression!r} never held; errors: {self.errors}; blocked: {self.blocked}; "
                f"the page showed: {str(text)[:2000]!r}"
            ) from None

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id)

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and params.get("blockedReason"):
            self.blocked.append(f"{params['blockedReason']}: {params.get('errorText')}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or str(details))
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(arg.get("value", arg)) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])


@dataclass
class Browser:
    process: asyncio.subprocess.Process
    connection: ClientConnection
    log: Path
    pages: dict[str, Page] = field(default_factory=dict)
    _replies: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _reader: asyncio.Task[None] | None = None

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[message["id"]] = reply
        await self.connection.send(json.dumps(message))
        async with asyncio.timeout(30):
            return await reply

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        session_id = attached["sessionId"]
        page = self.pages[session_id] = Page(self, target["targetId"], session_id)
        for domain in ("Page", "Network", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._dispatch()

    async def _dispatch(self) -> None:
        async for raw in self.connection:
            message = json.loads(raw)
            if "id" in message:
                reply = self._replies.pop(message["id"])
                if "error" in message:
                    reply.set_exception(AssertionError(f"DevTools: {message['error']}"))
                else:
                    reply.set_result(message.get("result", {}))
            elif (page := self.pages.get(message.get("sessionId", ""))) is not None:
                page.on_event(message["method"], message.get("params", {}))


@contextlib.asynccontextmanager
async def chromium(directory: Path) -> AsyncIterator[Browser]:
    """A fresh headless Chromium with its profile under `directory`, closed at the end."""
    profile = directory / "profile"
    log = directory / "chromium.log"
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *_FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    try:
        url = await _devtools_url(process, profile / "DevToolsActivePort", log)
        async with connect(url, max_size=None) as connection:
            browser = Browser(process, connection, log)
            browser._reader = asyncio.create_task(browser._read())
            try:
                yield browser
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(browser.send("Browser.close"), 5)
                browser._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await browser._reader
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _devtools_url(process: asyncio.subprocess.Process, active_port: Path, log: Path) -> str:
    """Chromium writes its DevTools port and path to DevToolsActivePort once it listens."""
    async with asyncio.timeout(30):
        while True:
            if process.returncode is not None:
                output = await anyio.Path(log).read_text(errors="replace")
                raise AssertionError(f"chromium exited:\n{output}")
            port_file = anyio.Path(active_port)
            lines = (await port_file.read_text()).split() if await port_file.exists() else []
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            await asyncio.sleep(0.05)
