# Build: the locked dependencies into a virtualenv. Run: non-root, migrates then serves.
FROM python:3.11-slim AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /srv
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN uv sync --frozen --no-dev

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /srv billing
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /srv /srv
WORKDIR /srv
ENV PATH=/opt/venv/bin:$PATH HOST=0.0.0.0 PORT=8000 PYTHONUNBUFFERED=1
USER billing
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
# DATABASE_URL, SECRET_KEY and GATEWAY must be set; `app.serve` applies migrations, then
# starts uvicorn.
CMD ["python", "-m", "app.serve"]
