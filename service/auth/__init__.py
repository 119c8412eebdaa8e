"""Authentication of the EHR (CDS Hooks 2.0 client JWT), in three parts:

* :mod:`service.auth.issuers` — the trusted-issuers file and the public keys in it;
* :mod:`service.auth.keysets` — the cache of allow-listed JWK Sets (``jku``);
* :mod:`service.auth.verifier` — the check of one ``Authorization`` header, and the replay cache.
"""

from service.auth.issuers import ALLOWED_ALGORITHMS, TrustedIssuer, TrustedIssuers, TrustedKey, parse_jwk
from service.auth.keysets import JwkSetCache
from service.auth.verifier import AUTH_OFF_CALLER, Caller, JwtVerifier, _SeenJtis

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AUTH_OFF_CALLER",
    "Caller",
    "JwkSetCache",
    "JwtVerifier",
    "TrustedIssuer",
    "TrustedIssuers",
    "TrustedKey",
    "_SeenJtis",
    "parse_jwk",
]
