# syntax=docker/dockerfile:1
# Stages: deps (pinned runtime venv) → test-tools (what the suite needs) → test (runs
#         `make test`; a failing test fails the build) | model (trains the default model, as
#         `make run` does) → production (slim, non-root).
# production copies tests-passed.sha256 from test, a file written only once `make test` passed:
# BuildKit and buildah build only the stages a target needs, and this makes the suite one of them.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
# The base image's pip installs into a venv without one: production ships what serving imports,
# not an installer.
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install -r requirements.txt

FROM deps AS test-tools
# scripts/install-test-tools.sh reads this and leaves out buildah and debootstrap: no image is
# built inside the image build.
ENV FRAUD_IMAGE_BUILD=1
# make drives the suite exactly as on a developer machine (curl: the README's curl examples are
# run as printed); the versions are whatever the pinned base image's Debian release ships (the
# suite does not depend on them).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl make \
    && rm -rf /var/lib/apt/lists/*
# The test requirements and the Debian test tools (redis-server, promtool, wrk), apart from the
# sources: a code change reuses these layers instead of downloading them again, and `make image`
# can prepare this stage while the suite runs outside (scripts/build-image.sh prepare).
COPY requirements-offline.txt requirements-dev.txt ./
# pip in the venv, so make's own install steps work here as on a developer machine.
RUN /opt/venv/bin/python -m ensurepip \
    && /opt/venv/bin/python -m pip install -r requirements-dev.txt
COPY scripts/install-test-tools.sh scripts/
RUN sh scripts/install-test-tools.sh

FROM test-tools AS test
COPY . .
# The markers tell make that /opt/venv already holds what the two requirement layers installed;
# `make test` then checks the tools again and runs the whole suite. Only if it passed, the digest
# of every source file under app/ is written (not the bytecode the suite's subprocesses leave):
# production checks it against the code it ships.
RUN touch /opt/venv/.runtime /opt/venv/.dev \
    && make test VENV=/opt/venv \
    && find app -type f ! -path '*/__pycache__/*' -exec sha256sum {} + > tests-passed.sha256

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
# No test stage, no production image: and the code shipped is the code the suite passed on.
COPY --from=test /app/tests-passed.sha256 ./
RUN sha256sum --check --quiet tests-passed.sha256
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
# python -m app validates the configuration, then starts uvicorn app.main:app with 2 workers;
# on SIGTERM requests under way get up to 20 s (below the 30 s ECS and Kubernetes allow here).
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8888", "--workers", "2", "--timeout-keep-alive", "75", "--timeout-graceful-shutdown", "20"]
