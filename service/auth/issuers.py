"""The trusted-issuers file (``BLINA_CDS_TRUSTED_ISSUERS_FILE``) and the public keys in it.

Only asymmetric keys are accepted (the spec forbids HMAC); a private key, a weak RSA key, an unknown
field or an empty list stops start-up with the file and the entry named.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ALLOWED_ALGORITHMS: frozenset[str] = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
"""Asymmetric JWS algorithms we accept; the spec recommends ES384 and RS384."""

_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_ISSUER_FIELDS = frozenset({"iss", "jwks", "jku", "fhir_servers"})


@dataclass(frozen=True)
class TrustedKey:
    """One public verification key, with the algorithms it may verify."""

    kid: str
    algorithms: frozenset[str]
    key: Any = field(repr=False)
    """A ``cryptography`` public key object."""


@dataclass(frozen=True)
class TrustedIssuer:
    """One entry of the trusted-issuers file."""

    iss: str
    keys: Mapping[str, TrustedKey]
    """The static JWKS, by ``kid``."""
    jku: tuple[str, ...]
    """Allow-listed JWK Set URLs (https only)."""
    fhir_servers: tuple[str, ...]


class TrustedIssuers:
    """The parsed, validated trusted-issuers file.

    Format (JSON)::

        {"issuers": [{"iss": "https://ehr.example.org",
                      "jwks": {"keys": [...]},
                      "jku": ["https://ehr.example.org/.well-known/jwks.json"],
                      "fhir_servers": ["https://ehr.example.org/fhir"]}]}

    An optional top-level ``"comment"`` string is a note for people (e.g. "local testing only") and is ignored.
    Each issuer needs ``jwks`` and/or ``jku``. ``fhir_servers`` is required (it may be empty:
    that issuer may then send no ``fhirServer``). Unknown fields are an error, so a typo stops
    start-up instead of silently weakening trust.
    """

    def __init__(self, issuers: Mapping[str, TrustedIssuer]) -> None:
        self._issuers = dict(issuers)

    @classmethod
    def from_file(cls, path: Path) -> TrustedIssuers:
        """Read and validate ``path``; raise ``ValueError`` naming the file and the problem."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read trusted-issuers file: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<trusted issuers>") -> TrustedIssuers:
        """Validate already-parsed JSON; errors are prefixed with ``source``."""
        if not isinstance(data, dict) or not isinstance(data.get("issuers"), list):
            raise ValueError(f'{source}: expected an object {{"issuers": [...]}}')
        unknown = sorted(set(data) - {"issuers", "comment"})
        if unknown:
            raise ValueError(f"{source}: unknown top-level field(s) {unknown}")
        if not isinstance(data.get("comment", ""), str):
            raise ValueError(f"{source}: comment: expected a string (a note for people; it is ignored)")
        if not data["issuers"]:
            raise ValueError(f"{source}: issuers: the list is empty, so no EHR could ever call")
        issuers: dict[str, TrustedIssuer] = {}
        for i, entry in enumerate(data["issuers"]):
            where = f"{source}: issuers[{i}]"
            issuer = _parse_issuer(entry, where=where)
            if issuer.iss in issuers:
                raise ValueError(f"{where}.iss: duplicate issuer {issuer.iss!r}")
            issuers[issuer.iss] = issuer
        return cls(issuers)

    def get(self, iss: str) -> TrustedIssuer | None:
        return self._issuers.get(iss)

    def __iter__(self) -> Iterator[TrustedIssuer]:
        return iter(self._issuers.values())

    def __len__(self) -> int:
        return len(self._issuers)


def _parse_issuer(entry: Any, *, where: str) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(set(entry) - _ISSUER_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss:
        raise ValueError(f"{where}.iss: missing or not a non-empty string")
    where = f"{where} ({iss})"
    if "jwks" not in entry and "jku" not in entry:
        raise ValueError(f"{where}: needs 'jwks' and/or 'jku' (neither is given)")

    keys: dict[str, TrustedKey] = {}
    if "jwks" in entry:
        jwks = entry["jwks"]
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
            raise ValueError(f'{where}.jwks: expected {{"keys": [...]}} with at least one key')
        for k, jwk in enumerate(jwks["keys"]):
            try:
                key = parse_jwk(jwk)
            except ValueError as exc:
                raise ValueError(f"{where}.jwks.keys[{k}]: {exc}") from exc
            if key.kid in keys:
                raise ValueError(f"{where}.jwks.keys[{k}]: duplicate kid {key.kid!r}")
            keys[key.kid] = key

    jku: tuple[str, ...] = ()
    if "jku" in entry:
        raw_jku = entry["jku"]
        if not isinstance(raw_jku, list) or not raw_jku or not all(isinstance(u, str) for u in raw_jku):
            raise ValueError(f"{where}.jku: expected a non-empty list of URL strings")
        for u in raw_jku:
            parts = urlsplit(u)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"{where}.jku: {u!r} is not an https URL")
        jku = tuple(dict.fromkeys(raw_jku))

    if "fhir_servers" not in entry:
        raise ValueError(f"{where}.fhir_servers: missing (list the FHIR base URLs, or [] for none)")
    raw_fhir = entry["fhir_servers"]
    if not isinstance(raw_fhir, list) or not all(isinstance(u, str) for u in raw_fhir):
        raise ValueError(f"{where}.fhir_servers: expected a list of URL strings")
    for u in raw_fhir:
        parts = urlsplit(u)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{where}.fhir_servers: {u!r} is not an http(s) URL")
    fhir_servers = tuple(dict.fromkeys(u.rstrip("/") for u in raw_fhir))

    return TrustedIssuer(iss=iss, keys=keys, jku=jku, fhir_servers=fhir_servers)


def parse_jwk(jwk: Any) -> TrustedKey:
    """Turn one public JWK into a :class:`TrustedKey`, or raise ``ValueError`` saying why not.

    Refused: symmetric (``oct``/HMAC) keys, private key material, ``use`` other than ``sig``,
    an ``alg`` outside :data:`ALLOWED_ALGORITHMS`, RSA keys under 2048 bits, a missing ``kid``.
    """
    if not isinstance(jwk, dict):
        raise ValueError("a JWK must be an object")
    kty = jwk.get("kty")
    alg = jwk.get("alg")
    if kty == "oct" or (isinstance(alg, str) and alg.upper().startswith("HS")):
        raise ValueError("symmetric (HMAC) keys are not allowed; CDS Hooks requires asymmetric keys")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("missing 'kid' (tokens select their key by kid)")
    private = sorted(_PRIVATE_JWK_MEMBERS & set(jwk))
    if private:
        raise ValueError(f"kid {kid!r} holds private key material {private}; publish the public key only")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"kid {kid!r}: 'use' is {use!r}, expected 'sig'")

    if kty == "EC":
        crv = jwk.get("crv")
        curve_alg = _EC_CURVE_ALG.get(crv) if isinstance(crv, str) else None
        if curve_alg is None:
            raise ValueError(f"kid {kid!r}: unsupported EC curve {crv!r}")
        algorithms = frozenset({curve_alg})
    elif kty == "RSA":
        algorithms = _RSA_ALGS
    else:
        raise ValueError(f"kid {kid!r}: unsupported key type {kty!r}")
    if alg is not None:
        if alg not in algorithms:
            raise ValueError(f"kid {kid!r}: 'alg' {alg!r} is not allowed for this {kty} key")
        algorithms = frozenset({alg})

    try:
        key = jwt.PyJWK(jwk, algorithm=min(algorithms)).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"kid {kid!r}: not a valid {kty} public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"kid {kid!r}: RSA key of {key.key_size} bits; at least {_MIN_RSA_BITS} needed")
    return TrustedKey(kid=kid, algorithms=algorithms, key=key)

