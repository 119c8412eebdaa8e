# blina-cds container image — the one deploy/k8s/deployment.yaml names:
#
#     docker build -t blina-cds:0.1.0 .
#
# The tag is the version in pyproject.toml. Not built in this project's CI (no Docker engine there):
# tests/test_dockerfile.py checks offline what it can (COPY sources, entry point, port, user, tag).
#
# Base: Debian 12 (bookworm, as the machines the tests run on) with CPython 3.11, pinned to a release. For a
# reproducible build pin its digest too: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

# No .pyc files written at runtime (the root filesystem may be read-only), unbuffered logs straight to stdout
# (the service logs JSON lines).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The service and its pinned runtime dependencies (pyproject.toml, without the test extras), installed in one
# step: kept simple rather than layered for caching, so any change to the code reinstalls the dependencies too.
COPY pyproject.toml README.md ./
COPY service ./service
COPY cards ./cards
# Start-up renders every card against the findings of the example patients (as `blina-cds cards check`).
COPY fhir_examples ./fhir_examples
# Installed in place (-e): the shipped cards/ and fhir_examples/ beside the package are then the defaults, and a
# site's overlay folder (only the files it changes) falls back to them. The bytecode is compiled here, once,
# because a read-only root filesystem cannot take it at runtime.
RUN pip install -e . \
    && python -m compileall -q service \
    && groupadd --system --gid 10001 blina \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home blina \
    && mkdir -p /app/var \
    && chown blina:blina /app/var

# Deployment settings (BLINA_CDS_*, README "Settings"); uvicorn's listen address, port and worker count among
# them. A site mounts folders holding only what it changes and sets BLINA_CDS_CARDS_DIR / BLINA_CDS_KNOWLEDGE_DIR.
# SQLite under /app/var is for one container only: several replicas need PostgreSQL (BLINA_CDS_DATABASE_URL).
ENV BLINA_CDS_HOST=0.0.0.0 \
    BLINA_CDS_PORT=8000 \
    BLINA_CDS_WORKERS=2 \
    BLINA_CDS_DATABASE_URL=sqlite:////app/var/blina-cds.db

# Numeric, so Kubernetes' runAsNonRoot can verify it (a user name cannot be checked without the image's passwd).
USER 10001:10001
EXPOSE 8000

# Reports the store too (503 while the database is unreachable); Kubernetes ignores HEALTHCHECK and uses its own
# probes (deploy/k8s: liveness on /livez, which never asks the database).
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('BLINA_CDS_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(url, timeout=2).status == 200 else 1)"]

# AUTH defaults to jwt: mount a trusted-issuers file and set BLINA_CDS_TRUSTED_ISSUERS_FILE and
# BLINA_CDS_PUBLIC_BASE_URL (the URL the EHR calls, used for the JWT aud check).
CMD ["blina-cds", "serve"]
