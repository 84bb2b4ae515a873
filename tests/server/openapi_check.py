"""Validate real responses against the shipped OpenAPI description (3.1 schemas = JSON Schema 2020-12)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI = Path(__file__).resolve().parents[2] / "jupyter_ptcuda" / "server" / "openapi.yaml"
URI = "urn:jupyter-ptcuda:openapi"


@cache
def spec() -> dict:
    return yaml.safe_load(OPENAPI.read_text())


@cache
def registry() -> Registry:
    return Registry().with_resource(URI, Resource(contents=spec(), specification=DRAFT202012))


def _esc(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def route(path: str) -> str | None:
    path = "/" + path.split("?", 1)[0].strip("/")
    for template in spec()["paths"]:
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), path):
            return template
    return None


def validate_response(method: str, path: str, status: int, content_type: str, body) -> None:
    """AssertionError unless (method, path, status) is documented and the body fits its schema."""
    template = route(path)
    assert template, f"{path} is not documented in openapi.yaml"
    op = spec()["paths"][template].get(method.lower())
    assert op, f"{method} {template} is not documented"
    resp = op["responses"].get(str(status))
    assert resp, f"{method} {template} -> {status} is not documented"
    pointer = ["paths", template, method.lower(), "responses", str(status)]
    if "$ref" in resp:
        name = resp["$ref"].rsplit("/", 1)[1]
        resp, pointer = spec()["components"]["responses"][name], ["components", "responses", name]
    media = resp.get("content", {})
    if not media:
        return
    kind = "application/json" if "json" in content_type else content_type.split(";")[0].strip()
    assert kind in media, f"{method} {template} -> {status}: undocumented content type {content_type!r}"
    if kind == "application/json" and "schema" in media[kind]:
        ref = URI + "#/" + "/".join(_esc(p) for p in [*pointer, "content", kind, "schema"])
        try:
            jsonschema.Draft202012Validator({"$ref": ref}, registry=registry()).validate(body)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{method} {template} -> {status} does not match openapi.yaml: {exc.message} "
                                 f"at {list(exc.absolute_path)}") from None
