# blina-cds container image.
# Not built in this project's CI (no Docker engine there); keep it small and obviously correct.
FROM python:3.11-slim

# No .pyc files at runtime, unbuffered logs straight to stdout (the service logs JSON lines).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The service and its pinned dependencies (pyproject.toml), installed in one step: kept simple rather than
# layered for caching, so any change to the code reinstalls the dependencies too.
COPY pyproject.toml README.md ./
COPY service ./service
COPY cards ./cards
# Start-up renders every card against the findings of the example patients (as `blina-cds cards check`).
COPY fhir_examples ./fhir_examples
# Installed in place (-e): the shipped cards/ and fhir_examples/ beside the package are then the defaults, and a
# site's overlay folder (only the files it changes) falls back to them.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /app blina \
    && mkdir -p /app/var \
    && chown blina /app/var

# A site mounts folders holding only what it changes and sets BLINA_CDS_CARDS_DIR / BLINA_CDS_KNOWLEDGE_DIR.
ENV BLINA_CDS_HOST=0.0.0.0 \
    BLINA_CDS_PORT=8000 \
    BLINA_CDS_WORKERS=2 \
    BLINA_CDS_DATABASE_URL=sqlite:////app/var/blina-cds.db

USER blina
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

# AUTH defaults to jwt: mount a trusted-issuers file and set BLINA_CDS_TRUSTED_ISSUERS_FILE and
# BLINA_CDS_PUBLIC_BASE_URL (the URL the EHR calls, used for the JWT aud check).
CMD ["blina-cds", "serve"]
