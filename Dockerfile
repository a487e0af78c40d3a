# codexlb in a container: `docker build -t codexlb .` (not built in CI; see README "Deployment").
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CODEX_LB_HOST=0.0.0.0 \
    CODEX_LB_PORT=2455 \
    CODEX_LB_DATA_DIR=/data \
    CODEX_LB_DATABASE_URL=sqlite+aiosqlite:////data/store.db \
    CODEX_LB_ENCRYPTION_KEY_FILE=/data/encryption.key

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin codexlb \
    && mkdir -p /data /app && chown codexlb:codexlb /data

WORKDIR /app
COPY pyproject.toml README.md settings.toml ./
COPY codexlb ./codexlb
COPY plugins ./plugins
COPY migrations ./migrations
RUN python -m pip install .

USER codexlb
VOLUME ["/data"]
EXPOSE 2455
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:2455/readyz', timeout=4).status != 200)"]
CMD ["codexlb", "serve"]
