# syntax=docker/dockerfile:1
# Stages: deps (pinned runtime venv) → test (runs `make test`; a failing test fails the build)
#         model (trains the default model, as `make run` does) → production (slim, non-root).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -r requirements.txt

FROM deps AS test
# make drives the suite exactly as on a developer machine; the versions are whatever the pinned
# base image's Debian release ships (the suite does not depend on them).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# VENV=/opt/venv reuses the runtime venv built above; `make test` adds the dev requirements,
# installs the Debian test tools (redis-server, promtool, wrk) and runs the whole suite.
RUN touch /opt/venv/.runtime && make test VENV=/opt/venv

FROM deps AS model
COPY app/ app/
RUN /opt/venv/bin/python -m app.train --out model/fraud-model.joblib

FROM ${PYTHON_IMAGE} AS production
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 appuser \
    && useradd --system --uid 10001 --gid appuser --no-create-home --shell /usr/sbin/nologin appuser
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY app/ app/
COPY model/mock-request-body.json model/
COPY --from=model /app/model/ model/
# The user is created above with a fixed uid/gid (10001), so the name resolves to the same ids.
# hadolint ignore=DL3066
USER appuser
EXPOSE 8888
# Liveness (the contract's /health/live): a container without a model stays up and says so on
# /health (503) so the load balancer routes around it; restarting it would not bring a model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/health/live', timeout=4)"]
# python -m app validates the configuration, then starts uvicorn app.main:app with 2 workers.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8888", "--workers", "2", "--timeout-keep-alive", "75"]
