"""CORS with a log line when a browser's preflight is refused.

A refused preflight never reaches the request log (CORS is the outermost middleware), and the browser hides the
status: the CDS Hooks Sandbox then shows "All clear!" or "Could not get a response". This logs it, at WARNING on
``blina_cds.cors``::

    CORS refused: Disallowed CORS origin (origin=http://localhost:8080)
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

log = logging.getLogger("blina_cds.cors")
_MAX_ORIGIN_CHARS = 200  # a request header: bounded before it reaches the log


class LoggedCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 400:
            origin = request_headers.get("origin", "")[:_MAX_ORIGIN_CHARS]
            log.warning("CORS refused: %s (origin=%s)", bytes(response.body).decode("utf-8", "replace"), origin)
        return response
