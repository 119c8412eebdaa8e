"""``blina-cds``: the command line.

    blina-cds serve [--host H] [--port P] [--workers N]
    blina-cds examples load --fhir-server URL [--name NAME ...]
    blina-cds examples list
    blina-cds examples request NAME CALL [--fhir-server URL]
    blina-cds cards check [--cards-dir DIR] [--knowledge-dir DIR]
    blina-cds preview REQUEST.json [--json]
    blina-cds feedback report [--since DATE] [--format table|json|csv]

The last three (analyst and tester tools) live in ``service.tools.commands``.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from service.errors import KnowledgeError
from service.tools.commands import add_commands


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.logs import configure_logging
    from service.main import create_app
    from service.server import raise_open_file_limit, serve_options
    from service.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"blina-cds: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    try:
        create_app(settings)  # fail fast, in this process, on a bad knowledge or card file
    except (KnowledgeError, ValueError) as exc:
        print(f"blina-cds: cannot start: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()  # before uvicorn: its worker processes inherit the raised limit
    uvicorn.run(
        "service.main:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **serve_options(settings),
    )
    return 0


def _examples(args: argparse.Namespace) -> int:
    from service import examples

    if args.examples_cmd == "list":
        for name in examples.names():
            print(name)
        return 0
    if args.examples_cmd == "request":
        import datetime as dt
        import json

        try:
            request = examples.request_for(args.name, args.call, now=dt.datetime.now(dt.UTC))
        except (examples.ExampleError, KeyError, StopIteration, FileNotFoundError) as exc:
            print(f"blina-cds: no example call {args.name}/{args.call} ({exc})", file=sys.stderr)
            return 2
        if args.fhir_server:
            request.pop("prefetch", None)
            request["fhirServer"] = args.fhir_server
        print(json.dumps(request, indent=1))
        return 0
    try:
        loaded = examples.load_into(args.fhir_server, names=args.name or None)
    except examples.ExampleError as exc:
        print(f"blina-cds: {exc}", file=sys.stderr)
        return 2
    for name, count in loaded.items():
        print(f"{name}: {count} resources")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blina-cds", description="CDS Hooks 2.0 service for blinatumomab safety")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP server (uvicorn)")
    serve.add_argument("--host", help="listen address (default BLINA_CDS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default BLINA_CDS_PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default BLINA_CDS_WORKERS or 1)")
    serve.set_defaults(func=_serve)
    ex = sub.add_parser("examples", help="the example patients in fhir_examples/")
    ex_sub = ex.add_subparsers(dest="examples_cmd", required=True)
    load = ex_sub.add_parser("load", help="load examples into a FHIR server (dates shifted to now)")
    load.add_argument("--fhir-server", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8091/fhir")
    load.add_argument("--name", action="append", help="only this example (repeatable)")
    ex_sub.add_parser("list", help="list the examples")
    req = ex_sub.add_parser("request", help="print an example call's hook request, dates shifted to now")
    req.add_argument("name", help="example name (see `examples list`)")
    req.add_argument("call", help="call id (see the example's manifest.json)")
    req.add_argument("--fhir-server", help="drop the prefetch and set fhirServer, to exercise the FHIR fallback")
    ex.set_defaults(func=_examples)
    add_commands(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
