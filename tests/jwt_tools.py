"""Helpers for tests that need the EHR's JWT: real keys, signed tokens, a trusted-issuers file.

    private_key, jwk = make_es384_keypair()
    path = issuers_file(tmp_path, issuers=[issuer_entry("https://ehr.example.org", keys=[jwk])])
    token = sign(private_key, kid=jwk["kid"], iss="https://ehr.example.org",
                 aud="http://127.0.0.1:8000/cds-services")
    headers = {"Authorization": f"Bearer {token}"}

Pass ``OMIT`` for ``jti``, ``iat`` or ``exp`` (or ``kid``) to leave that claim (header) out.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()
"""Sentinel: leave the claim or header out of the token."""

EHR_ISS = "https://ehr.example.org"
EHR_FHIR = "https://ehr.example.org/fhir"
EHR_JKU = "https://ehr.example.org/.well-known/jwks.json"


def make_es384_keypair(*, kid: str | None = None) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    """A fresh P-384 key and its public JWK (with ``kid``, ``alg`` ES384, ``use`` sig)."""
    private_key = ec.generate_private_key(ec.SECP384R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid or f"es384-{uuid.uuid4()}", alg="ES384", use="sig")
    return private_key, jwk


def make_rs384_keypair(*, kid: str | None = None,
                       alg: str | None = "RS384") -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    """A fresh 2048-bit RSA key and its public JWK (``alg`` left out when ``alg=None``)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid or f"rs384-{uuid.uuid4()}", use="sig")
    if alg is not None:
        jwk["alg"] = alg
    return private_key, jwk


def sign(private_key: Any, *, kid: Any, iss: Any, aud: Any, jti: Any = None, iat: Any = None,
         exp: Any = None, alg: str = "ES384", extra_headers: dict[str, Any] | None = None,
         extra_claims: dict[str, Any] | None = None, now: float | None = None) -> str:
    """A signed JWT shaped like the Sandbox's (``typ`` JWT, no ``sub``, no ``tenant``).

    Defaults: ``jti`` a fresh uuid, ``iat`` = ``now`` (default: the wall clock), ``exp`` = iat + 300.
    """
    now = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": int(now) if iat is None else iat,
        "jti": str(uuid.uuid4()) if jti is None else jti,
    }
    claims["exp"] = int(now) + 300 if exp is None else exp
    claims.update(extra_claims or {})
    claims = {k: v for k, v in claims.items() if v is not OMIT}
    headers: dict[str, Any] = {"typ": "JWT", "kid": kid}
    headers.update(extra_headers or {})
    headers = {k: v for k, v in headers.items() if v is not OMIT}
    return jwt.encode(claims, private_key, algorithm=alg, headers=headers)


def issuer_entry(iss: str = EHR_ISS, *, keys: list[dict[str, Any]] | None = None,
                 jku: list[str] | None = None, fhir_servers: list[str] | None = None) -> dict[str, Any]:
    """One issuer of the trusted-issuers file (``jwks`` only if ``keys``, ``jku`` only if given)."""
    entry: dict[str, Any] = {"iss": iss}
    if keys is not None:
        entry["jwks"] = {"keys": keys}
    if jku is not None:
        entry["jku"] = jku
    entry["fhir_servers"] = [EHR_FHIR] if fhir_servers is None else fhir_servers
    return entry


def issuers_file(tmp_path: Path, issuers: list[dict[str, Any]], *,
                 name: str = "trusted-issuers.json") -> Path:
    """Write ``{"issuers": issuers}`` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.write_text(json.dumps({"issuers": issuers}, indent=2), encoding="utf-8")
    return path
