"""Swagger UI at /docs and ReDoc at /redoc (SPEC §13), their scripts and styles served by the
service itself from app/ops/static (vendored by scripts/vendor-docs-assets): the pages need
no internet, and their Content-Security-Policy lets them load nothing from anywhere else."""

import secrets
from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PATH = "/docs/static"

# Only the service itself. `data:` images are the icons inlined in Swagger UI's stylesheet.
_DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# ReDoc needs more, on its page only. It styles itself as it renders by adding <style>
# elements: those it makes once started carry the page's nonce, but the scroll bars' stylesheet
# is added as the script loads, before it knows the nonce, so it is allowed by its hash (and
# the empty element it starts as, by the empty string's): a new ReDoc version may need new
# hashes, which the browser test names. Its search index runs in a web worker made from a
# blob: URL.
_REDOC_STYLE_HASHES = (
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",  # perfect-scrollbar's CSS
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",  # ""
)

router = APIRouter(include_in_schema=False)


class DocsAssets(StaticFiles):
    """The pages' files: they are not API responses, so a browser may keep them, asking the
    service (by ETag) whether they changed before each use."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_docs(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS_PATH, DocsAssets(directory=STATIC_DIR), name="docs_assets")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    assets, schema = _urls(request)
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(request.app.title)} - Swagger UI</title>
<link rel="icon" type="image/png" href="{assets}/vendor/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{schema}"></div>
<script src="{assets}/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-ui-init.js"></script>
</body>
</html>
"""
    return HTMLResponse(html, headers={"Content-Security-Policy": _DOCS_CSP})


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    assets, schema = _urls(request)
    nonce = secrets.token_urlsafe(16)
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(request.app.title)} - ReDoc</title>
<link rel="icon" type="image/png" href="{assets}/vendor/swagger-ui/favicon-32x32.png">
</head>
<body>
<noscript>ReDoc needs JavaScript; the schema itself is at {schema}.</noscript>
<div id="redoc" data-openapi-url="{schema}" data-style-nonce="{nonce}"></div>
<script src="{assets}/vendor/redoc/redoc.standalone.js"></script>
<script src="{assets}/redoc-init.js"></script>
</body>
</html>
"""
    styles = " ".join(("'self'", f"'nonce-{nonce}'", *_REDOC_STYLE_HASHES))
    csp = f"{_DOCS_CSP}; style-src {styles}; worker-src blob:"
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def _urls(request: Request) -> tuple[str, str]:
    """Where the pages' files and the schema are, behind any path prefix (root_path)."""
    base = request.scope.get("root_path", "").rstrip("/")
    return escape(f"{base}{ASSETS_PATH}"), escape(f"{base}{request.app.openapi_url}")
