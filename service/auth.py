"""Verification of the EHR's CDS Hooks 2.0 client JWT (``BLINA_CDS_AUTH=jwt``).

Why each rule (cds-hooks-2.0.md §5.2, best-practices.md, §8.2 for the Sandbox):

* only asymmetric algorithms: the spec forbids ``none`` and every symmetric (HMAC) algorithm, and
  accepting HS* next to RS*/ES* opens the classic "public key used as HMAC secret" confusion attack;
* the keys come from a trusted-issuers file (``BLINA_CDS_TRUSTED_ISSUERS_FILE``): a static JWKS
  and/or allow-listed ``jku`` URLs per ``iss``. A ``jku`` header outside that list is refused
  *before* any HTTP request: fetching an arbitrary ``jku`` is SSRF and key substitution;
* ``aud`` must be exactly ``PUBLIC_BASE_URL + path`` (a string or a one-element array);
* ``exp``, ``iat`` and ``jti`` are required; ``iat``/``exp``/``nbf`` get a clock leeway (the Sandbox
  signs tokens whose ``iat`` is up to 0.5 s in the future); a ``jti`` is refused a second time
  for the token's lifetime. ``sub`` and ``tenant`` are not required (the Sandbox sends neither).

Cheap checks on the unverified header and ``iss`` run first, so a token we could never accept
costs no signature work and no HTTP request. Claims are checked here rather than by PyJWT
because PyJWT reads the wall clock and the clock must be injectable.

Every failure raises :class:`service.errors.AuthError`; its ``reason`` (which check failed) is
logged on the ``blina_cds.auth`` logger together with ``iss`` and ``jti``, never the token, and
never reaches the response body.

    issuers = TrustedIssuers.from_file(settings.trusted_issuers_file)
    verifier = JwtVerifier(issuers, http=client, leeway_s=settings.jwt_leeway_s,
                           jku_cache_ttl_s=settings.jku_cache_ttl_s)
    caller = await verifier.verify(request.headers.get("authorization"),
                                   audience=settings.public_base_url + request.url.path)
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from service.errors import AuthError

logger = logging.getLogger("blina_cds.auth")

ALLOWED_ALGORITHMS: frozenset[str] = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
"""Asymmetric JWS algorithms we accept; the spec recommends ES384 and RS384."""

_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_MAX_TOKEN_CHARS = 16_384
_MAX_JTI_CHARS = 512
_MAX_JWKS_BYTES = 256 * 1024
_JKU_TIMEOUT_S = 5.0
_ISSUER_FIELDS = frozenset({"iss", "jwks", "jku", "fhir_servers"})


@dataclass(frozen=True)
class Caller:
    """Who called: the verified issuer and the FHIR base URLs it may send as ``fhirServer``."""

    iss: str | None
    """``None`` when auth is off."""
    fhir_servers: tuple[str, ...] | None
    """Allowed FHIR base URLs, without trailing slash; ``None`` means any (auth off)."""
    jti: str | None = None


AUTH_OFF_CALLER = Caller(iss=None, fhir_servers=None)
"""The caller of every request when ``BLINA_CDS_AUTH=off``."""


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


@dataclass
class _JkuState:
    """What we know about one allow-listed JWK Set URL."""

    keys: dict[str, TrustedKey] | None = None
    fetched_at: float = 0.0
    attempted_at: float | None = None
    """When we last tried to fetch (success or failure); ``None``: never."""
    generation: int = 0
    """Bumped when a fetch finishes, so waiters can tell that one happened."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _SeenJtis:
    """``(iss, jti)`` pairs seen, each kept until its token can no longer be accepted.

    Bounded: expired entries are evicted on every check; when ``max_entries`` unexpired entries
    are held, new tokens are refused (fail closed) rather than forgetting a still-valid ``jti``,
    which would reopen the replay window.
    """

    def __init__(self, *, max_entries: int) -> None:
        self._max = max_entries
        self._until: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._until)

    def check_and_add(self, key: tuple[str, str], *, until: float, now: float) -> None:
        """Raise ``AuthError`` if ``key`` was seen and has not expired; else remember it."""
        self._evict(now)
        if key in self._until:
            raise AuthError("jti replayed")
        if len(self._until) >= self._max:
            raise AuthError(f"jti cache full ({self._max} unexpired entries); refusing to forget any")
        self._until[key] = until
        heapq.heappush(self._heap, (until, key))

    def _evict(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            until, key = heapq.heappop(self._heap)
            if self._until.get(key) == until:
                del self._until[key]


class JwtVerifier:
    """Checks the ``Authorization`` header of one request; one instance per process.

    ``jku_min_refetch_s`` rate-limits fetches of one JWK Set URL: an unknown ``kid`` (key rotation)
    or a failed fetch causes at most one new request per URL per that many seconds (never more
    often than the cache TTL allows), so forged ``kid`` values cannot make us hammer the EHR.
    """

    def __init__(
        self,
        issuers: TrustedIssuers,
        *,
        http: httpx.AsyncClient,
        leeway_s: int = 60,
        jku_cache_ttl_s: int = 300,
        clock: Callable[[], float] = time.time,
        jku_min_refetch_s: float = 30.0,
        jti_cache_max: int = 100_000,
        max_lifetime_s: int = 3600,
    ) -> None:
        self._issuers = issuers
        # Best practice keeps seen jti values "for the maximum duration of all JWTs" (≤ 1 h): a token that
        # claims to live longer is refused, so no issuer can pin entries in the replay cache for days.
        self._max_lifetime = float(max_lifetime_s)
        self._http = http
        self._leeway = float(leeway_s)
        self._jku_ttl = float(jku_cache_ttl_s)
        self._refetch_min = min(float(jku_min_refetch_s), self._jku_ttl)
        self._clock = clock
        self._jku: dict[str, _JkuState] = {}
        self._seen = _SeenJtis(max_entries=jti_cache_max)

    async def verify(self, authorization: str | None, *, audience: str) -> Caller:
        """Return the verified caller, or raise ``AuthError`` (logged here with the reason)."""
        ctx: dict[str, str | None] = {"iss": None, "jti": None}
        try:
            caller = await self._verify(authorization, audience=audience, ctx=ctx)
        except AuthError as exc:
            logger.warning("JWT rejected: %s (iss=%s jti=%s)", exc.reason,
                           _show(ctx["iss"]), _show(ctx["jti"]))
            raise
        logger.debug("JWT accepted (iss=%s jti=%s)", _show(caller.iss), _show(caller.jti))
        return caller

    async def _verify(self, authorization: str | None, *, audience: str,
                      ctx: dict[str, str | None]) -> Caller:
        token = _bearer_token(authorization)

        # 1. The unverified header: reject what we could never accept before any key work.
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed JWT header: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"alg {_show(alg)} not allowed (asymmetric algorithms only)")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ("jwt", "application/jwt")):
            raise AuthError(f"typ {_show(typ)} is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid missing from JWT header")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise AuthError("jku header is not a string")

        # 2. The unverified iss, only to pick the keys.
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed JWT payload: {exc}") from None
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("iss missing")
        ctx["iss"] = iss
        raw_jti = unverified.get("jti")
        ctx["jti"] = raw_jti if isinstance(raw_jti, str) else None
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise AuthError("iss is not a trusted issuer")
        if jku is not None and jku not in issuer.jku:
            raise AuthError(f"jku {_show(jku)} is not allow-listed for this issuer")

        # 3. The key, then the signature.
        key = await self._find_key(issuer, kid=kid, jku=jku)
        if alg not in key.algorithms:
            raise AuthError(f"alg {alg} does not match key {_show(kid)} (allows {sorted(key.algorithms)})")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[alg],
                options={"verify_signature": True, "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False, "verify_aud": False, "verify_iss": False,
                         "verify_sub": False, "verify_jti": False, "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"signature check failed: {type(exc).__name__}: {exc}") from None

        # 4. Claims, against the injected clock.
        now = self._clock()
        exp = _numeric_claim(claims, "exp")
        iat = _numeric_claim(claims, "iat")
        if exp <= now - self._leeway:
            raise AuthError(f"token expired (exp {exp:.0f}, now {now:.0f}, leeway {self._leeway:.0f}s)")
        if iat > now + self._leeway:
            raise AuthError(f"iat in the future (iat {iat:.0f}, now {now:.0f}, leeway {self._leeway:.0f}s)")
        if exp < iat:
            raise AuthError("exp is before iat")
        if exp > now + self._max_lifetime + self._leeway:
            raise AuthError(f"exp more than {self._max_lifetime:.0f}s ahead (exp {exp:.0f}, now {now:.0f})")
        if "nbf" in claims and _numeric_claim(claims, "nbf") > now + self._leeway:
            raise AuthError("token not yet valid (nbf)")
        _check_audience(claims.get("aud"), audience)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti missing")
        if len(jti) > _MAX_JTI_CHARS:
            raise AuthError("jti too long")

        # 5. Replay, last: a token that failed any other check must not occupy the cache.
        self._seen.check_and_add((iss, jti), until=exp + self._leeway, now=now)
        return Caller(iss=issuer.iss, fhir_servers=issuer.fhir_servers, jti=jti)

    async def _find_key(self, issuer: TrustedIssuer, *, kid: str, jku: str | None) -> TrustedKey:
        """Static JWKS first; then the token's ``jku`` (already allow-listed) or every allow-listed one."""
        static = issuer.keys.get(kid)
        if static is not None:
            return static
        urls = (jku,) if jku is not None else issuer.jku
        failures: list[str] = []
        for url in urls:
            try:
                key = await self._jku_key(url, kid)
            except AuthError as exc:
                failures.append(exc.reason)
                continue
            if key is not None:
                return key
        detail = f"; {'; '.join(failures)}" if failures else ""
        raise AuthError(f"kid {_show(kid)} not found in the issuer's keys{detail}")

    async def _jku_key(self, url: str, kid: str) -> TrustedKey | None:
        """The key ``kid`` from the JWK Set at ``url``, fetching it if stale or on a rotation miss.

        Concurrent requests share one fetch: whoever waits on the lock while a fetch is in flight
        uses that fetch's outcome instead of starting another.
        """
        state = self._jku.get(url)
        if state is None:
            state = self._jku[url] = _JkuState()
        generation = state.generation
        if not state.lock.locked():
            found, must_fetch = self._lookup(state, kid)
            if not must_fetch:
                return found
        async with state.lock:
            if state.generation != generation:  # a fetch finished while we waited: use its outcome
                found, _ = self._lookup(state, kid, rate_limited=True)
                return found
            state.attempted_at = started = self._clock()
            try:
                keys = await self._fetch_jwks(url)
            finally:
                state.generation += 1
            state.keys = keys
            state.fetched_at = started
            return keys.get(kid)

    def _lookup(self, state: _JkuState, kid: str, *,
                rate_limited: bool = False) -> tuple[TrustedKey | None, bool]:
        """Return ``(key, must_fetch)`` from the cached set; raise if it is unusable and we may not fetch."""
        now = self._clock()
        fresh = state.keys is not None and now - state.fetched_at < self._jku_ttl
        if fresh and state.keys is not None and kid in state.keys:
            return state.keys[kid], False
        may_fetch = not rate_limited and (state.attempted_at is None
                                          or now - state.attempted_at >= self._refetch_min)
        if may_fetch:
            return None, True
        if fresh:
            return None, False  # kid unknown and a refetch happened moments ago
        raise AuthError("jku JWK Set unavailable (last fetch failed; refetch rate-limited)")

    async def _fetch_jwks(self, url: str) -> dict[str, TrustedKey]:
        """GET an allow-listed JWK Set; no redirects, a size cap, and a deadline on the whole read (a body that
        trickles in forever is cut, not only a silent one)."""
        try:
            async with asyncio.timeout(_JKU_TIMEOUT_S), self._http.stream(
                "GET", url, headers={"Accept": "application/json"}, timeout=_JKU_TIMEOUT_S, follow_redirects=False
            ) as resp:
                if resp.status_code != 200:
                    raise AuthError(f"jku fetch {url}: HTTP {resp.status_code}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise AuthError(f"jku fetch {url}: body larger than {_MAX_JWKS_BYTES} bytes")
        except (httpx.HTTPError, TimeoutError) as exc:
            raise AuthError(f"jku fetch {url} failed: {type(exc).__name__}") from None
        try:
            data = json.loads(bytes(body))
        except ValueError:
            raise AuthError(f"jku fetch {url}: not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise AuthError(f"jku fetch {url}: not a JWK Set")
        keys: dict[str, TrustedKey] = {}
        for i, jwk in enumerate(data["keys"]):
            try:
                key = parse_jwk(jwk)
            except ValueError as exc:
                logger.warning("JWK Set %s: key [%d] skipped: %s", url, i, exc)
                continue
            keys.setdefault(key.kid, key)
        logger.info("JWK Set %s fetched: %d usable key(s)", url, len(keys))
        return keys


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise AuthError("Authorization header missing")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("Authorization scheme is not Bearer")
    token = token.strip()
    if not token or " " in token:
        raise AuthError("Bearer token empty or malformed")
    if len(token) > _MAX_TOKEN_CHARS:
        raise AuthError(f"Bearer token longer than {_MAX_TOKEN_CHARS} characters")
    return token


def _numeric_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if value is None:
        raise AuthError(f"{name} missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthError(f"{name} is not a finite number")
    return float(value)


def _check_audience(aud: Any, audience: str) -> None:
    """``aud`` must be ``audience`` itself or a one-element array holding it."""
    if aud is None:
        raise AuthError("aud missing")
    if isinstance(aud, list):
        if len(aud) != 1:
            raise AuthError(f"aud is an array of {len(aud)} values; exactly one is accepted")
        aud = aud[0]
    if aud != audience:
        raise AuthError(f"aud {_show(aud)} does not equal {audience!r}")


def _show(value: Any, *, limit: int = 80) -> str:
    """A log-safe, bounded rendering of an attacker-controlled value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
