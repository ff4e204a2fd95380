# syntax=docker/dockerfile:1
# One image for every okrstream process. The command picks the process:
#   python -m services.api.main        front door (HTTP on OKR_HTTP_PORT: /healthz, /readyz)
#   python -m services.relay.main      event store -> Kafka relay (run exactly one)
#   python -m services.processor.main  stream processor worker (scale out up to the partitions)
#   okrstream ...                      the CLI (token create, replay, audit verify, ...)
# No configuration or secret is baked in: everything comes from OKR_* variables at run time
# (services/settings.py). See deploy/README.md.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: wheels for okrstream and its dependencies (no dev extras) -------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Compilers only here, for any dependency that has no wheel for this platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY events ./events
COPY projections ./projections
COPY contracts ./contracts
COPY services ./services
COPY deploy ./deploy
RUN pip wheel --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OKR_HTTP_HOST=0.0.0.0 \
    OKR_HTTP_PORT=8000 \
    OKR_DATA_DIR=/var/lib/okrstream
# tini as PID 1: forwards SIGTERM to the service and reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 okrstream \
 && useradd --system --uid 10001 --gid okrstream --no-create-home \
      --home-dir /var/lib/okrstream --shell /usr/sbin/nologin okrstream \
 && install -d -o okrstream -g okrstream -m 0750 /var/lib/okrstream
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels okrstream \
 && python -c "import services.settings, contracts.topics"

USER 10001:10001
WORKDIR /var/lib/okrstream
VOLUME ["/var/lib/okrstream"]
EXPOSE 8000

# The front door's liveness. Relay and processor containers serve no HTTP: compose turns
# this check off for them and Kubernetes uses its own probes (deploy/k8s/).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OKR_HTTP_PORT', '8000'), timeout=2)"]

ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "services.api.main"]
