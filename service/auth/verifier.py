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

The replay cache has two layers. The in-process one answers first (a replay to the same process costs no
database round trip). The shared one (``replays``: the store's ``jwt_replays`` table) is the truth across
workers and replicas: a ``jti`` is claimed there with an insert-if-absent, so a token used on one replica is
refused on every other. When the store does not answer within ``store_timeout_s`` (or failed in the last
``store_retry_s``), the token is checked against the in-process cache alone and accepted if fresh there:
logged (once per outage), counted in ``blina_cds_jti_checked_locally_total``, and claimed in the store once it
answers again. The alternative — refusing every call while the database is down — would stop the hooks that
keep patients safe; the window this leaves is a replay *to another process* of a token captured in transit,
for at most the token's lifetime (≤ ``max_lifetime_s``) and only during the outage.

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
import hashlib
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt

from service import metrics
from service.auth.issuers import ALLOWED_ALGORITHMS, TrustedIssuer, TrustedIssuers, TrustedKey
from service.auth.keysets import JwkSetCache
from service.errors import AuthError

logger = logging.getLogger("blina_cds.auth")

_MAX_TOKEN_CHARS = 16_384
_MAX_JTI_CHARS = 512


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



class ReplayStore(Protocol):
    """The shared replay cache (``service.store.SqlFeedbackStore``)."""

    async def claim_jti(self, key: str, *, expires_at: datetime, now: datetime) -> bool: ...


class _SeenJtis:
    """``(iss, jti)`` pairs seen, each kept until its token can no longer be accepted.

    Bounded: expired entries are evicted on every check; when ``max_entries`` unexpired entries
    are held, new tokens are refused (fail closed) rather than forgetting a still-valid ``jti``,
    which would reopen the replay window — unless the shared store holds the truth (``required=False``).
    """

    def __init__(self, *, max_entries: int) -> None:
        self._max = max_entries
        self._until: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._until)

    @property
    def max_entries(self) -> int:
        return self._max

    def check_and_add(self, key: tuple[str, str], *, until: float, now: float) -> None:
        """Raise ``AuthError`` if ``key`` was seen and has not expired; else remember it."""
        self.check(key, now=now)
        self.add(key, until=until, now=now, required=True)

    def check(self, key: tuple[str, str], *, now: float) -> None:
        """Raise ``AuthError`` if ``key`` was seen and has not expired."""
        self._evict(now)
        if key in self._until:
            raise AuthError("jti replayed")

    def add(self, key: tuple[str, str], *, until: float, now: float, required: bool) -> None:
        """Remember ``key``; when full, raise if this cache is the only record (``required``), else skip it."""
        self._evict(now)
        if len(self._until) >= self._max:
            if required:
                raise AuthError(f"jti cache full ({self._max} unexpired entries); refusing to forget any")
            return
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
        replays: ReplayStore | None = None,
        store_timeout_s: float = 1.0,
        store_retry_s: float = 5.0,
    ) -> None:
        self._issuers = issuers
        # Best practice keeps seen jti values "for the maximum duration of all JWTs" (≤ 1 h): a token that
        # claims to live longer is refused, so no issuer can pin entries in the replay cache for days.
        self._max_lifetime = float(max_lifetime_s)
        self._leeway = float(leeway_s)
        self._clock = clock
        self._keysets = JwkSetCache(http=http, ttl_s=jku_cache_ttl_s, min_refetch_s=jku_min_refetch_s, clock=clock)
        self._seen = _SeenJtis(max_entries=jti_cache_max)
        self._replays = replays
        self._store_timeout_s = store_timeout_s
        self._store_retry_s = store_retry_s
        self._store_down_until = -math.inf  # monotonic
        self._unshared: dict[tuple[str, str], float] = {}  # accepted while the store was down: claim them later
        self._sharing: asyncio.Task[None] | None = None

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

        # 1. The unverified header: reject what we could never accept before any key work. One parse gives the
        #    header and the claims of a well-formed token; a malformed one is parsed again, step by step, so the
        #    reason names the part that is wrong (and a bad header is still reported before a bad payload).
        try:
            parsed = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            parsed = None
        if parsed is not None:
            header = parsed["header"]
        else:
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
        if parsed is not None:
            unverified = parsed["payload"]
        else:
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
        await self._claim((iss, jti), until=exp + self._leeway, now=now)
        return Caller(iss=issuer.iss, fhir_servers=issuer.fhir_servers, jti=jti)

    async def _claim(self, key: tuple[str, str], *, until: float, now: float) -> None:
        """Refuse a ``jti`` seen before by this process or, through the shared store, by any other."""
        self._seen.check(key, now=now)
        if self._replays is None:
            self._seen.add(key, until=until, now=now, required=True)
            return
        if time.monotonic() >= self._store_down_until:
            try:
                fresh = await asyncio.wait_for(self._replays.claim_jti(
                    _replay_key(key), expires_at=_aware(until), now=_aware(now)), self._store_timeout_s)
            except Exception as exc:  # unreachable, busy past its timeout, or slower than store_timeout_s
                self._store_failed(exc)
            else:
                if not fresh:
                    raise AuthError("jti replayed (used before on another worker or replica)")
                self._seen.add(key, until=until, now=now, required=False)
                if self._unshared and self._sharing is None:
                    self._sharing = asyncio.create_task(self._share_unshared(), name="jti-share")
                return
        # The store is unavailable: the in-process cache alone decides, and is then the only record.
        self._seen.add(key, until=until, now=now, required=True)
        metrics.JTI_LOCAL_ONLY.inc()
        if len(self._unshared) < self._seen.max_entries:
            self._unshared[key] = until

    def _store_failed(self, exc: BaseException) -> None:
        metrics.STORE_FAILURES.labels(operation="jti").inc()
        if time.monotonic() >= self._store_down_until + self._store_retry_s:  # first failure of an outage
            logger.error("jti replay store unavailable (%s); checking tokens against this process's cache alone "
                         "for the next %.0f s", type(exc).__name__, self._store_retry_s)
        self._store_down_until = time.monotonic() + self._store_retry_s

    async def _share_unshared(self) -> None:
        """Claim in the store the tokens accepted while it was down, so other replicas refuse them from now on."""
        assert self._replays is not None
        try:
            while self._unshared:
                key, until = next(iter(self._unshared.items()))
                now = self._clock()
                if until > now:
                    await self._replays.claim_jti(_replay_key(key), expires_at=_aware(until), now=_aware(now))
                del self._unshared[key]
        except Exception as exc:
            self._store_failed(exc)
        finally:
            self._sharing = None

    async def _find_key(self, issuer: TrustedIssuer, *, kid: str, jku: str | None) -> TrustedKey:
        """Static JWKS first; then the token's ``jku`` (already allow-listed) or every allow-listed one."""
        static = issuer.keys.get(kid)
        if static is not None:
            return static
        urls = (jku,) if jku is not None else issuer.jku
        failures: list[str] = []
        for url in urls:
            try:
                key = await self._keysets.key(url, kid)
            except AuthError as exc:
                failures.append(exc.reason)
                continue
            if key is not None:
                return key
        detail = f"; {'; '.join(failures)}" if failures else ""
        raise AuthError(f"kid {_show(kid)} not found in the issuer's keys{detail}")



def _replay_key(key: tuple[str, str]) -> str:
    """The shared cache's key for ``(iss, jti)``: a sha256, fixed length, no token text in the database."""
    return hashlib.sha256(json.dumps(list(key), ensure_ascii=False).encode("utf-8")).hexdigest()


def _aware(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


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
