"""The floor of ``make bench``: a bare FastAPI app that does what no CDS service can avoid, and nothing else.

    .venv/bin/python -m tests.bench.floor --port 8011

One route per path the benchmark's workloads hit: ``POST /cds-services/<id>`` for each service in the catalog
reads the body, parses it with orjson (as the service does) and answers ``{"cards": []}``; ``GET /cds-services``
answers the service's own discovery document (built from the same catalog, serialised once); ``GET /healthz``
answers ``{"status": "ok"}`` so the harness can wait for it like for the service. It is run by uvicorn with
exactly the options ``blina-cds serve`` uses (``service.server.serve_options``: HTTP protocol class, keep-alive,
limits, logging) and the same event loop choice, one worker, on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys

import orjson
from fastapi import FastAPI, Request, Response

from service.catalog import build_catalog
from service.knowledge import load_knowledge
from service.settings import DEFAULT_KNOWLEDGE_DIR, Settings

NO_CARDS = orjson.dumps({"cards": []})
JSON = "application/json"


def discovery_document(settings: Settings) -> bytes:
    """The service's ``GET /cds-services`` answer, from the same knowledge and catalog."""
    kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=settings.knowledge_dir)
    return orjson.dumps({"services": [s.discovery() for s in build_catalog(kb).values()]})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(auth="off")
    discovery = discovery_document(settings)
    kb = load_knowledge(DEFAULT_KNOWLEDGE_DIR, overlay=settings.knowledge_dir)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def hook_call(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if not isinstance(body, dict):
            return Response(b'{"error":"not an object"}', status_code=400, media_type=JSON)
        return Response(NO_CARDS, media_type=JSON)

    for service_id in build_catalog(kb):
        app.add_api_route(f"/cds-services/{service_id}", hook_call, methods=["POST"], name=service_id)

    @app.get("/cds-services")
    async def cds_services() -> Response:
        return Response(discovery, media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from service.server import raise_open_file_limit, serve_options

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings(auth="off")
    raise_open_file_limit()
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, workers=1, **serve_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
