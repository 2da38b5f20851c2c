# One image for every Keyturn process: worker (the default), beat, flower, `keyturn db upgrade`,
# `keyturn metrics`. No secret is baked in: credentials come from the environment at run time.
# Not built on the machine it was written on (no Docker engine there); see docs/operations.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 keyturn \
    && useradd --system --uid 10001 --gid keyturn --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin keyturn

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rotation/ rotation/
COPY worker/ worker/
# hadolint ignore=DL3013
RUN pip install '.[all]' && rm -rf build ./*.egg-info

COPY alembic.ini ./
COPY migrations/ migrations/
COPY schedules/ schedules/

# beat keeps its (disposable) schedule file here: due-ness lives in Postgres, not in this file
RUN mkdir -p /var/lib/keyturn && chown keyturn:keyturn /var/lib/keyturn

ENV KEYTURN_SCHEDULES=/app/schedules \
    KEYTURN_MIGRATIONS_DIR=/app/migrations

USER 10001:10001

# the worker answers a broadcast ping through the broker; other services override this check
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "celery -A worker inspect ping --timeout 10 -d \"celery@$HOSTNAME\" > /dev/null"]

CMD ["celery", "-A", "worker", "worker", "-l", "INFO"]
