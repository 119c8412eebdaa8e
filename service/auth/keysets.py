"""The cache of allow-listed JWK Sets (``jku``): fetched on demand, kept for a TTL, refetched at most
once per URL per ``min_refetch_s`` (a forged ``kid`` cannot make us hammer the EHR), one fetch shared by
concurrent callers, no redirects, a short timeout and a size cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from service.auth.issuers import TrustedKey, parse_jwk
from service.errors import AuthError

logger = logging.getLogger("blina_cds.auth")

_MAX_JWKS_BYTES = 256 * 1024
_JKU_TIMEOUT_S = 5.0


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


class JwkSetCache:
    """Keys of allow-listed JWK Set URLs, by URL; one instance per verifier."""

    def __init__(self, *, http: httpx.AsyncClient, ttl_s: float, min_refetch_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._http = http
        self._jku_ttl = float(ttl_s)
        self._refetch_min = min(float(min_refetch_s), self._jku_ttl)
        self._clock = clock
        self._jku: dict[str, _JkuState] = {}

    async def key(self, url: str, kid: str) -> TrustedKey | None:
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
