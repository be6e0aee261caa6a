"""/docs and /redoc (SPEC §13): the pages name only files the service serves itself, under its
security headers and a Content-Security-Policy that allows nothing from anywhere else. (That
they render in a browser is tests/test_browser.py's.)"""

import re
from html.parser import HTMLParser

import httpx
import pytest

from app.openapi_dump import served_schema
from tests.problems import assert_problem

DOCS_PAGES = ("/docs", "/redoc")
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.data: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and name in ("src", "href", "data-openapi-url"):
                self.urls.append(value)
            elif value is not None and name.startswith("data-"):
                self.data[name] = value


def references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def directives(policy: str) -> dict[str, list[str]]:
    parts = (directive.split() for directive in policy.split(";") if directive.strip())
    return {name: values for name, *values in parts}


@pytest.mark.parametrize("path", DOCS_PAGES)
async def test_a_docs_page_loads_only_files_the_service_serves(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    urls = references(page.text).urls
    assert "/openapi.json" in urls
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert re.fullmatch(r"/[a-z0-9/._-]+", url), url  # a path of the service: no host
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff"
        for extension, content_type in CONTENT_TYPES.items():
            if url.endswith(extension):
                assert asset.headers["content-type"].startswith(content_type), url


async def test_swagger_ui_may_run_and_load_only_what_the_service_serves(
    client: httpx.AsyncClient,
) -> None:
    policy = directives((await client.get("/docs")).headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"]
    # No script-src or style-src of its own: both fall back to the service only, so no inline
    # script runs (Swagger UI starts from a served file).
    assert "script-src" not in policy
    assert "style-src" not in policy
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


async def test_redoc_adds_styles_only_with_the_pages_own_nonce_and_a_search_worker(
    client: httpx.AsyncClient,
) -> None:
    pages = [await client.get("/redoc") for _ in range(2)]
    nonces = []
    for page in pages:
        policy = directives(page.headers["content-security-policy"])
        nonce = references(page.text).data["data-style-nonce"]
        assert policy["default-src"] == ["'self'"]
        assert "script-src" not in policy
        assert policy["style-src"][:2] == ["'self'", f"'nonce-{nonce}'"]
        assert all(source.startswith("'sha256-") for source in policy["style-src"][2:])
        assert policy["worker-src"] == ["blob:"]
        nonces.append(nonce)
    assert len(set(nonces)) == 2
    assert all(len(nonce) >= 16 for nonce in nonces)


async def test_docs_assets_may_be_kept_and_are_revalidated_by_etag(
    client: httpx.AsyncClient,
) -> None:
    url = "/docs/static/vendor/swagger-ui/swagger-ui-bundle.js"
    first = await client.get(url)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    assert first.headers["x-content-type-options"] == "nosniff"
    again = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


async def test_an_unknown_docs_asset_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/docs/static/vendor/nowhere.js"), 404, "not_found")


async def test_the_services_own_code_is_not_served_beside_the_docs_assets(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs/static/%2e%2e/docs.py")
    assert_problem(response, 404, "not_found")
    assert "import" not in response.text


async def test_a_docs_asset_allows_get_and_head_only(client: httpx.AsyncClient) -> None:
    response = await client.post("/docs/static/swagger-ui-init.js")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


def test_the_docs_pages_are_not_operations_of_the_schema() -> None:
    paths = served_schema()
    assert '"/docs' not in paths
    assert '"/redoc' not in paths
