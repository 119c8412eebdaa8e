"""The OpenAPI document at ``/openapi.json``: what the service really accepts and answers.

The routes read raw bodies (the hand-written parse in ``service.routes`` is the fast path), so FastAPI
cannot see their models; each route declares its request body and every status it answers through
``openapi_extra`` with the fragments below, and :func:`install` adds the models they name (from
``service.schemas``) as components, with the configured limits (``BLINA_CDS_MAX_*``) written into them.
Every error answer is an OperationOutcome in ``application/fhir+json``. Security (a Bearer JWT) is declared
only when ``BLINA_CDS_AUTH=jwt``: the document describes the service as configured.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.catalog import CdsService
from service.schemas import (
    FHIR_SERVER_PATTERN,
    CdsResponse,
    DiscoveryResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    HookRequest,
    Live,
    OperationOutcome,
    OrderSelectContext,
    OrderSignContext,
    PatientViewContext,
)
from service.settings import Settings

_REF = "#/components/schemas/{model}"
_JSON_TYPES = ("application/json", "application/fhir+json")

_ERRORS = {
    400: "The request is not valid for this service (the OperationOutcome names the field)",
    401: "The JWT is missing or failed a check (the body never says which)",
    404: "No CDS service has this id",
    412: "Data the rules need is neither prefetched nor obtainable from fhirServer (the prefetch key is named)",
    413: "The body, or the number of feedback items, is over its limit",
    415: "The body is not declared as JSON (application/json or application/fhir+json)",
    503: "The service cannot answer now; retry",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {t: {"schema": _ref(model)} for t in _JSON_TYPES}}


def _answers(ok: type[BaseModel], *errors: int) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": _ref(ok)}}}}
    return responses | _errors(*errors)


def _errors(*errors: int) -> dict[str, Any]:
    return {
        str(status): {"description": _ERRORS[status],
                      "content": {"application/fhir+json": {"schema": _ref(OperationOutcome)}}}
        for status in errors
    }


DISCOVERY = {"responses": _answers(DiscoveryResponse, 400, 401)}
HOOK_CALL = {"requestBody": _json_body(HookRequest), "responses": _answers(CdsResponse, 400, 401, 404, 412, 413, 415,
                                                                            503)}
FEEDBACK = {"requestBody": _json_body(FeedbackRequest),
            "responses": _answers(FeedbackResponse, 400, 401, 404, 413, 415, 503)}
HEALTH = {"responses": {
    "200": {"description": "Alive and answering hook calls; `status` is `degraded` while the store is unreachable",
            "content": {"application/json": {"schema": _ref(Health)}}},
}}
LIVE = {"responses": {
    "200": {"description": "This process answers (the feedback store is not checked)",
            "content": {"application/json": {"schema": _ref(Live)}}},
}}
ANALYTICS = {"responses": {
    "200": {"description": "Per rule: cards issued, accepted, overridden, override rate, top reasons, comments",
            "content": {"application/json": {"schema": {"type": "object", "required": ["since", "rules"]}}}},
    **_errors(400, 401, 503),
}}
METRICS = {"responses": {"200": {"description": "Prometheus text format",
                                 "content": {"text/plain": {"schema": {"type": "string"}}}}}}

_MODELS: tuple[type[BaseModel], ...] = (
    HookRequest, OrderSignContext, OrderSelectContext, PatientViewContext, FeedbackRequest, CdsResponse,
    FeedbackResponse, DiscoveryResponse, Health, Live, OperationOutcome,
)


def document(app: FastAPI, settings: Settings, *, services: Sequence[CdsService]) -> dict[str, Any]:
    """Build the document for ``app`` as configured by ``settings``, one operation per catalog service.

    ``/cds-services/{service_id}`` stays for any other id: it is always a 404.
    """
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, schemas = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    components: dict[str, Any] = doc.setdefault("components", {})
    components["schemas"] = schemas.get("$defs", {})
    _write_limits(components["schemas"], settings)
    paths: dict[str, Any] = doc["paths"]
    for path_item in paths.values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)  # FastAPI's own; our validation answers 400
            ok = operation.get("responses", {}).get("200", {}).get("content", {})
            if len(ok) > 1 and ok.get("application/json") == {"schema": {}}:
                del ok["application/json"]  # FastAPI's placeholder next to the real media type
    for service in services:
        for template, suffix in (("/cds-services/{service_id}", ""),
                                 ("/cds-services/{service_id}/feedback", "/feedback")):
            operation = copy.deepcopy(paths[template]["post"])
            operation.pop("parameters", None)
            operation["operationId"] = f"{operation['operationId']}_{service.id}".replace("-", "_")
            operation["responses"].pop("404", None)
            if not suffix:
                operation["requestBody"] = _json_body_schema(_hook_request_of(service))
            paths[f"/cds-services/{service.id}{suffix}"] = {"post": operation}
    ids = [service.id for service in services]
    for template in ("/cds-services/{service_id}", "/cds-services/{service_id}/feedback"):
        operation = paths[template]["post"]
        operation["summary"] += " (unknown service id)"
        operation["parameters"][0]["schema"] = {"type": "string", "pattern": "^[^/]*$", "not": {"enum": ids}}
        operation["responses"] = {k: v for k, v in operation["responses"].items() if k in ("400", "401", "404")}
        operation["responses"]["400"]["description"] = "More than one Authorization header"
    if settings.auth == "jwt":
        components["securitySchemes"] = {"ehrJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    for path, item in paths.items():
        if path.startswith("/cds-services"):
            for operation in item.values():
                if settings.auth == "jwt":
                    operation["security"] = [{"ehrJwt": []}]
                else:
                    operation["responses"].pop("401", None)
    return doc


def _json_body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {t: {"schema": schema} for t in _JSON_TYPES}}


def _hook_request_of(service: CdsService) -> dict[str, Any]:
    """``HookRequest`` narrowed to one service: its hook, its context model, its prefetch keys."""
    objects = {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "object"}}]}
    resource = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}
    prefetch: dict[str, Any] = {}
    for key, template in service.prefetch.items():
        value: dict[str, Any] = {
            "type": "object", "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"}},
            "if": {"properties": {"resourceType": {"const": "Bundle"}}},
            "then": {"properties": {"link": objects, "entry": {"anyOf": [{"type": "null"}, {
                "type": "array", "items": {"type": "object", "properties": {
                    "resource": {"anyOf": [{"type": "null"}, resource]}}}}]}}},
        }
        if "?" not in template:  # a read: the resource itself, a Bundle, or the client's OperationOutcome
            value["properties"]["resourceType"] = {"enum": [_resource_type(template), "Bundle", "OperationOutcome"]}
        prefetch[key] = {"anyOf": [{"type": "null"}, value]}
    return {"allOf": [_ref(HookRequest), {"properties": {
        "hook": {"const": service.hook},
        "context": _ref(service.context_model),
        "prefetch": {"anyOf": [{"type": "null"}, {"type": "object", "properties": prefetch}]},
    }}]}


def _resource_type(template: str) -> str:
    return template.split("?", 1)[0].split("/", 1)[0]


def _write_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The configured bounds, so the document refuses what the service refuses."""
    hook = schemas["HookRequest"]["properties"]
    hook["hookInstance"]["maxLength"] = settings.max_hook_instance_chars
    server = next(o for o in hook["fhirServer"]["anyOf"] if o.get("type") == "string")
    server["pattern"] = FHIR_SERVER_PATTERN
    hook["context"] = {"anyOf": [_ref(m) for m in (OrderSignContext, OrderSelectContext, PatientViewContext)]}
    # What the model validators check across fields, in JSON Schema's words.
    schemas["HookRequest"]["if"] = {"required": ["fhirAuthorization"],
                                    "properties": {"fhirAuthorization": {"type": "object"}}}
    schemas["HookRequest"]["then"] = {"required": ["fhirServer"], "properties": {"fhirServer": {"type": "string"}}}
    schemas["FeedbackItem"]["if"] = {"properties": {"outcome": {"const": "accepted"}}}
    schemas["FeedbackItem"]["then"] = {"required": ["acceptedSuggestions"],
                                       "properties": {"acceptedSuggestions": {"type": "array", "minItems": 1}}}
    schemas["FeedbackRequest"]["properties"]["feedback"]["maxItems"] = settings.max_feedback_items
    for name in ("FeedbackItem", "AcceptedSuggestion", "FeedbackCoding", "OverrideReason"):
        for prop in schemas[name]["properties"].values():
            for option in (prop, *prop.get("anyOf", ())):
                if option.get("type") == "string" and option.get("format") is None:
                    option["maxLength"] = settings.max_feedback_text_chars
                if option.get("type") == "array":
                    option["maxItems"] = settings.max_feedback_items


def install(app: FastAPI, settings: Settings, *, services: Sequence[CdsService]) -> None:
    """Serve :func:`document` at ``/openapi.json`` (built once, on first request)."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cache:
            cache.update(document(app, settings, services=services))
        return cache

    app.openapi = openapi  # type: ignore[method-assign]
