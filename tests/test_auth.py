"""The EHR's CDS Hooks 2.0 JWT: what is accepted, what is refused and why (the log), and what is
never revealed (the 401 body). Keys are real (P-384, RSA-2048); the clock is injected."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization

from service.auth import Caller, JwtVerifier, TrustedIssuers, _SeenJtis
from service.errors import AuthError
from tests.jwt_tools import (
    EHR_FHIR,
    EHR_ISS,
    EHR_JKU,
    OMIT,
    issuer_entry,
    issuers_file,
    make_es384_keypair,
    make_rs384_keypair,
    sign,
)

NOW = 1_800_000_000.0
AUD = "https://cds.example.org/cds-services/blina-patient-view"
OTHER_ISS = "https://other-ehr.example.net"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def es_key() -> tuple[Any, dict[str, Any]]:
    return make_es384_keypair()


@pytest.fixture(scope="module")
def rs_key() -> tuple[Any, dict[str, Any]]:
    return make_rs384_keypair(alg=None)  # an alg-less RSA JWK may verify any RS*/PS* algorithm


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """Every HTTP request must be mocked; tests read ``router.calls`` to count fetches."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as r:
        yield r


@pytest.fixture
async def http(router: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


MakeVerifier = Callable[..., JwtVerifier]


@pytest.fixture
def make_verifier(http: httpx.AsyncClient, clock: FakeClock, tmp_path: Path) -> MakeVerifier:
    def make(issuers: list[dict[str, Any]], **kwargs: Any) -> JwtVerifier:
        trusted = TrustedIssuers.from_file(issuers_file(tmp_path, issuers=issuers))
        return JwtVerifier(trusted, http=http, clock=clock, **kwargs)

    return make


@pytest.fixture
def verifier(make_verifier: MakeVerifier, es_key: tuple[Any, dict[str, Any]],
             rs_key: tuple[Any, dict[str, Any]]) -> JwtVerifier:
    """EHR_ISS with a static JWKS holding one ES384 and one RSA key; no jku."""
    return make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1], rs_key[1]])])


def es_token(es_key: tuple[Any, dict[str, Any]], **overrides: Any) -> str:
    args: dict[str, Any] = {"kid": es_key[1]["kid"], "iss": EHR_ISS, "aud": AUD, "now": NOW}
    args.update(overrides)
    return sign(es_key[0], **args)


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def rejected(verifier: JwtVerifier, authorization: str | None, *, audience: str = AUD) -> str:
    """Assert the call is refused; return the (log-only) reason."""
    with pytest.raises(AuthError) as info:
        await verifier.verify(authorization, audience=audience)
    return info.value.reason


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def forge_hs256(secret: bytes, *, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """Hand-built HS256 JWS (PyJWT refuses to use a PEM public key as an HMAC secret)."""
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": EHR_ISS, "aud": AUD, "iat": int(NOW), "exp": int(NOW) + 300,
                            "jti": "forged-1"}
    base.update(overrides)
    return base


# --- accepted tokens -------------------------------------------------------------------------


async def test_valid_es384_token_gives_the_issuer_and_its_fhir_servers(
        verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    caller = await verifier.verify(bearer(es_token(es_key, jti="jti-es-1")), audience=AUD)
    assert caller == Caller(iss=EHR_ISS, fhir_servers=(EHR_FHIR,), jti="jti-es-1")


async def test_valid_rs384_token_is_accepted(verifier: JwtVerifier,
                                             rs_key: tuple[Any, dict[str, Any]]) -> None:
    token = sign(rs_key[0], kid=rs_key[1]["kid"], iss=EHR_ISS, aud=AUD, alg="RS384", now=NOW,
                 jti="jti-rs-1")
    caller = await verifier.verify(bearer(token), audience=AUD)
    assert (caller.iss, caller.jti) == (EHR_ISS, "jti-rs-1")


async def test_lowercase_bearer_scheme_is_accepted(verifier: JwtVerifier,
                                                   es_key: tuple[Any, dict[str, Any]]) -> None:
    caller = await verifier.verify(f"bearer {es_token(es_key)}", audience=AUD)
    assert caller.iss == EHR_ISS


async def test_sandbox_iat_half_a_second_in_the_future_is_accepted(
        verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    caller = await verifier.verify(bearer(es_token(es_key, iat=NOW + 0.5, exp=NOW + 300.5)), audience=AUD)
    assert caller.iss == EHR_ISS


async def test_aud_as_one_element_array_is_accepted(verifier: JwtVerifier,
                                                    es_key: tuple[Any, dict[str, Any]]) -> None:
    caller = await verifier.verify(bearer(es_token(es_key, aud=[AUD])), audience=AUD)
    assert caller.iss == EHR_ISS


async def test_exp_within_the_leeway_is_accepted(verifier: JwtVerifier,
                                                 es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, iat=int(NOW) - 330, exp=int(NOW) - 30)
    caller = await verifier.verify(bearer(token), audience=AUD)
    assert caller.iss == EHR_ISS


# --- time claims -----------------------------------------------------------------------------


async def test_iat_two_minutes_in_the_future_is_rejected(verifier: JwtVerifier,
                                                         es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, iat=int(NOW) + 120, exp=int(NOW) + 420)
    assert "iat in the future" in await rejected(verifier, bearer(token))


async def test_expired_token_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, iat=int(NOW) - 400, exp=int(NOW) - 61)
    assert "expired" in await rejected(verifier, bearer(token))


async def test_token_expires_by_the_injected_clock(verifier: JwtVerifier, clock: FakeClock,
                                                   es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key)  # exp = NOW + 300
    clock.now = NOW + 300 + 61
    assert "expired" in await rejected(verifier, bearer(token))


@pytest.mark.parametrize("claim", ["exp", "iat"])
async def test_missing_exp_or_iat_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]],
                                             claim: str) -> None:
    token = es_token(es_key, **{claim: OMIT})
    assert await rejected(verifier, bearer(token)) == f"{claim} missing"


@pytest.mark.parametrize("exp", ["tomorrow", True, float("inf"), float("nan")])
async def test_non_numeric_or_infinite_exp_is_rejected(verifier: JwtVerifier,
                                                      es_key: tuple[Any, dict[str, Any]], exp: Any) -> None:
    assert await rejected(verifier, bearer(es_token(es_key, exp=exp))) == "exp is not a finite number"


# --- header checks before any key work --------------------------------------------------------


async def test_alg_none_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    token = jwt.encode(claims(), "", algorithm="none", headers={"kid": es_key[1]["kid"], "typ": "JWT"})
    assert "alg 'none' not allowed" in await rejected(verifier, bearer(token))


async def test_hs256_signed_with_the_public_key_is_rejected(
        verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    """The key-confusion attack: the public key (known to everyone) used as an HMAC secret."""
    public_pem = es_key[0].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = forge_hs256(public_pem, header={"alg": "HS256", "typ": "JWT", "kid": es_key[1]["kid"]},
                        payload=claims())
    assert "alg 'HS256' not allowed" in await rejected(verifier, bearer(token))


async def test_kid_missing_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    assert await rejected(verifier, bearer(es_token(es_key, kid=OMIT))) == "kid missing from JWT header"


async def test_typ_other_than_jwt_is_rejected(verifier: JwtVerifier,
                                              es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, extra_headers={"typ": "at+jwt"})
    assert "is not JWT" in await rejected(verifier, bearer(token))


async def test_token_without_typ_is_accepted(verifier: JwtVerifier,
                                             es_key: tuple[Any, dict[str, Any]]) -> None:
    caller = await verifier.verify(bearer(es_token(es_key, extra_headers={"typ": OMIT})), audience=AUD)
    assert caller.iss == EHR_ISS


@pytest.mark.parametrize(("authorization", "reason"), [
    (None, "Authorization header missing"),
    ("", "Authorization header missing"),
    ("Basic dXNlcjpwYXNz", "Authorization scheme is not Bearer"),
    ("Bearer", "Bearer token empty or malformed"),
    ("Bearer a.b.c extra", "Bearer token empty or malformed"),
])
async def test_authorization_header_missing_or_not_bearer(verifier: JwtVerifier, authorization: str | None,
                                                          reason: str) -> None:
    assert await rejected(verifier, authorization) == reason


async def test_garbage_token_is_rejected(verifier: JwtVerifier) -> None:
    assert "malformed JWT header" in await rejected(verifier, "Bearer not-a-jwt")


# --- issuer and keys --------------------------------------------------------------------------


async def test_unknown_iss_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    reason = await rejected(verifier, bearer(es_token(es_key, iss="https://evil.example.com")))
    assert reason == "iss is not a trusted issuer"


async def test_unknown_kid_is_rejected_without_http(verifier: JwtVerifier, router: respx.MockRouter,
                                                    es_key: tuple[Any, dict[str, Any]]) -> None:
    reason = await rejected(verifier, bearer(es_token(es_key, kid="no-such-kid")))
    assert reason == "kid 'no-such-kid' not found in the issuer's keys"
    assert router.calls.call_count == 0


async def test_signature_by_another_key_under_a_trusted_kid_is_rejected(
        verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    impostor, _ = make_es384_keypair()
    token = sign(impostor, kid=es_key[1]["kid"], iss=EHR_ISS, aud=AUD, now=NOW)
    assert "signature check failed" in await rejected(verifier, bearer(token))


async def test_alg_not_matching_the_keys_alg_is_rejected(make_verifier: MakeVerifier) -> None:
    private_key, jwk = make_rs384_keypair(alg="RS384")
    v = make_verifier([issuer_entry(EHR_ISS, keys=[jwk])])
    token = sign(private_key, kid=jwk["kid"], iss=EHR_ISS, aud=AUD, alg="RS256", now=NOW)
    assert "alg RS256 does not match key" in await rejected(v, bearer(token))


async def test_token_of_one_issuer_cannot_use_another_issuers_key(
        make_verifier: MakeVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    other_private, other_jwk = make_es384_keypair()
    v = make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]]), issuer_entry(OTHER_ISS, keys=[other_jwk])])
    token = sign(other_private, kid=other_jwk["kid"], iss=EHR_ISS, aud=AUD, now=NOW)
    assert "not found in the issuer's keys" in await rejected(v, bearer(token))


# --- audience ---------------------------------------------------------------------------------


async def test_wrong_aud_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, aud="https://cds.example.org/cds-services")
    assert "does not equal" in await rejected(verifier, bearer(token))


async def test_aud_array_of_two_is_rejected_even_if_one_matches(
        verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, aud=[AUD, "https://elsewhere.example.com"])
    assert "array of 2 values" in await rejected(verifier, bearer(token))


async def test_aud_missing_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    assert await rejected(verifier, bearer(es_token(es_key, aud=OMIT))) == "aud missing"


# --- jti --------------------------------------------------------------------------------------


async def test_jti_replay_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    token = es_token(es_key, jti="once")
    await verifier.verify(bearer(token), audience=AUD)
    assert await rejected(verifier, bearer(token)) == "jti replayed"


async def test_jti_reused_in_a_new_token_is_rejected(verifier: JwtVerifier,
                                                     es_key: tuple[Any, dict[str, Any]]) -> None:
    await verifier.verify(bearer(es_token(es_key, jti="same")), audience=AUD)
    assert await rejected(verifier, bearer(es_token(es_key, jti="same", iat=int(NOW) + 1))) == "jti replayed"


async def test_jti_missing_is_rejected(verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    assert await rejected(verifier, bearer(es_token(es_key, jti=OMIT))) == "jti missing"


async def test_same_jti_from_two_issuers_is_not_a_replay(make_verifier: MakeVerifier,
                                                         es_key: tuple[Any, dict[str, Any]]) -> None:
    other_private, other_jwk = make_es384_keypair()
    v = make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]]), issuer_entry(OTHER_ISS, keys=[other_jwk])])
    await v.verify(bearer(es_token(es_key, jti="shared")), audience=AUD)
    caller = await v.verify(bearer(sign(other_private, kid=other_jwk["kid"], iss=OTHER_ISS, aud=AUD,
                                        jti="shared", now=NOW)), audience=AUD)
    assert caller.iss == OTHER_ISS


async def test_a_rejected_token_does_not_burn_its_jti(verifier: JwtVerifier,
                                                      es_key: tuple[Any, dict[str, Any]]) -> None:
    await rejected(verifier, bearer(es_token(es_key, jti="j1", aud="https://wrong.example.com")))
    caller = await verifier.verify(bearer(es_token(es_key, jti="j1")), audience=AUD)
    assert caller.jti == "j1"


def test_jti_cache_evicts_expired_entries() -> None:
    seen = _SeenJtis(max_entries=10)
    seen.check_and_add(("iss", "a"), until=NOW + 10, now=NOW)
    seen.check_and_add(("iss", "b"), until=NOW + 100, now=NOW)
    seen.check_and_add(("iss", "c"), until=NOW + 50, now=NOW + 20)  # evicts "a"
    assert len(seen) == 2
    seen.check_and_add(("iss", "a"), until=NOW + 80, now=NOW + 20)  # "a" expired: no longer a replay
    with pytest.raises(AuthError, match="Authentication failed"):
        seen.check_and_add(("iss", "b"), until=NOW + 100, now=NOW + 20)


def test_jti_cache_is_capped_and_fails_closed() -> None:
    seen = _SeenJtis(max_entries=2)
    seen.check_and_add(("iss", "a"), until=NOW + 10, now=NOW)
    seen.check_and_add(("iss", "b"), until=NOW + 10, now=NOW)
    with pytest.raises(AuthError) as info:
        seen.check_and_add(("iss", "c"), until=NOW + 10, now=NOW)
    assert "jti cache full" in info.value.reason
    seen.check_and_add(("iss", "c"), until=NOW + 20, now=NOW + 10)  # a and b expired → room again
    assert len(seen) == 1


class SharedReplays:
    """A shared replay store (the role ``SqlFeedbackStore.claim_jti`` plays) that can be made slow or unreachable."""

    def __init__(self) -> None:
        self.held: dict[str, datetime] = {}
        self.down = False
        self.delay_s = 0.0

    async def claim_jti(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise ConnectionError("database unreachable")
        if key in self.held and self.held[key] > now:
            return False
        self.held[key] = expires_at
        return True


async def test_a_jti_claimed_by_another_process_is_refused(make_verifier: MakeVerifier,
                                                           es_key: tuple[Any, dict[str, Any]]) -> None:
    shared = SharedReplays()
    first, second = (make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]])], replays=shared) for _ in range(2))
    token = bearer(es_token(es_key, jti="j-shared"))
    await first.verify(token, audience=AUD)
    assert "another worker or replica" in await rejected(second, token)
    [(key, until)] = shared.held.items()
    assert len(key) == 64 and "j-shared" not in key  # hashed
    assert until == datetime.fromtimestamp(NOW + 300 + 60, UTC)  # exp + the default leeway


async def test_an_unreachable_or_slow_store_falls_back_to_the_process_cache(
        make_verifier: MakeVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    shared = SharedReplays()
    verifier = make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]])], replays=shared, store_timeout_s=0.05,
                             store_retry_s=60)
    shared.delay_s = 1.0  # slower than the timeout: the call does not wait for it
    token = bearer(es_token(es_key, jti="j-slow"))
    assert (await verifier.verify(token, audience=AUD)).jti == "j-slow"
    assert "jti replayed" in await rejected(verifier, token)  # the process still remembers it
    shared.delay_s, shared.down = 0.0, True
    assert (await verifier.verify(bearer(es_token(es_key, jti="j-down")), audience=AUD)).jti == "j-down"
    assert shared.held == {}


async def test_with_a_shared_store_a_full_process_cache_does_not_refuse(
        make_verifier: MakeVerifier, es_key: tuple[Any, dict[str, Any]]) -> None:
    verifier = make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]])], replays=SharedReplays(), jti_cache_max=1)
    for jti in ("a", "b", "c"):
        assert (await verifier.verify(bearer(es_token(es_key, jti=jti)), audience=AUD)).jti == jti
    assert "another worker or replica" in await rejected(verifier, bearer(es_token(es_key, jti="c")))


# --- jku --------------------------------------------------------------------------------------


async def test_allow_listed_jku_is_fetched_once_and_cached(
        make_verifier: MakeVerifier, router: respx.MockRouter, es_key: tuple[Any, dict[str, Any]]) -> None:
    route = router.get(EHR_JKU).mock(return_value=httpx.Response(200, json={"keys": [es_key[1]]}))
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])])
    for _ in range(2):
        token = es_token(es_key, extra_headers={"jku": EHR_JKU})
        assert (await v.verify(bearer(token), audience=AUD)).iss == EHR_ISS
    assert route.call_count == 1
    assert route.calls.last.request.headers["accept"] == "application/json"


async def test_jku_sets_are_searched_when_the_token_names_no_jku(
        make_verifier: MakeVerifier, router: respx.MockRouter, es_key: tuple[Any, dict[str, Any]]) -> None:
    route = router.get(EHR_JKU).mock(return_value=httpx.Response(200, json={"keys": [es_key[1]]}))
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])])
    assert (await v.verify(bearer(es_token(es_key)), audience=AUD)).iss == EHR_ISS
    assert route.call_count == 1


async def test_jku_cache_expires_after_its_ttl(make_verifier: MakeVerifier, router: respx.MockRouter,
                                               clock: FakeClock, es_key: tuple[Any, dict[str, Any]]) -> None:
    route = router.get(EHR_JKU).mock(return_value=httpx.Response(200, json={"keys": [es_key[1]]}))
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])], jku_cache_ttl_s=300)
    await v.verify(bearer(es_token(es_key)), audience=AUD)
    clock.now = NOW + 301
    await v.verify(bearer(es_token(es_key, now=clock.now)), audience=AUD)
    assert route.call_count == 2


async def test_jku_not_allow_listed_is_rejected_without_any_request(
        make_verifier: MakeVerifier, router: respx.MockRouter, es_key: tuple[Any, dict[str, Any]]) -> None:
    v = make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]], jku=[EHR_JKU])])
    token = es_token(es_key, extra_headers={"jku": "https://attacker.example.com/jwks.json"})
    assert "is not allow-listed" in await rejected(v, bearer(token))
    assert router.calls.call_count == 0


async def test_static_jwks_is_used_before_the_jku(make_verifier: MakeVerifier, router: respx.MockRouter,
                                                  es_key: tuple[Any, dict[str, Any]]) -> None:
    v = make_verifier([issuer_entry(EHR_ISS, keys=[es_key[1]], jku=[EHR_JKU])])
    await v.verify(bearer(es_token(es_key, extra_headers={"jku": EHR_JKU})), audience=AUD)
    assert router.calls.call_count == 0


async def test_rotated_key_triggers_one_rate_limited_refetch(
        make_verifier: MakeVerifier, router: respx.MockRouter, clock: FakeClock,
        es_key: tuple[Any, dict[str, Any]]) -> None:
    new_private, new_jwk = make_es384_keypair()
    route = router.get(EHR_JKU).mock(side_effect=[
        httpx.Response(200, json={"keys": [es_key[1]]}),
        httpx.Response(200, json={"keys": [es_key[1], new_jwk]}),
    ])
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])], jku_min_refetch_s=30)
    await v.verify(bearer(es_token(es_key)), audience=AUD)

    # Within the refetch interval an unknown kid is refused from the cache: no new request.
    clock.now = NOW + 10
    rotated = sign(new_private, kid=new_jwk["kid"], iss=EHR_ISS, aud=AUD, now=clock.now)
    assert "not found" in await rejected(v, bearer(rotated))
    assert route.call_count == 1

    # After it, the unknown kid causes one refetch, which finds the new key.
    clock.now = NOW + 40
    rotated = sign(new_private, kid=new_jwk["kid"], iss=EHR_ISS, aud=AUD, now=clock.now)
    assert (await v.verify(bearer(rotated), audience=AUD)).iss == EHR_ISS
    assert route.call_count == 2


@pytest.mark.parametrize("response", [
    httpx.Response(500),
    httpx.Response(200, text="<html>not json</html>"),
    httpx.Response(200, json={"no": "keys"}),
    httpx.ConnectTimeout("timed out"),
])
async def test_jku_fetch_failure_is_an_auth_error(make_verifier: MakeVerifier, router: respx.MockRouter,
                                                  es_key: tuple[Any, dict[str, Any]],
                                                  response: httpx.Response | Exception) -> None:
    router.get(EHR_JKU).mock(side_effect=[response])
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])])
    assert "jku fetch" in await rejected(v, bearer(es_token(es_key)))


async def test_jku_redirect_is_not_followed(make_verifier: MakeVerifier, router: respx.MockRouter,
                                            es_key: tuple[Any, dict[str, Any]]) -> None:
    router.get(EHR_JKU).mock(return_value=httpx.Response(
        302, headers={"Location": "https://attacker.example.com/jwks.json"}))
    elsewhere = router.get("https://attacker.example.com/jwks.json").mock(
        return_value=httpx.Response(200, json={"keys": [es_key[1]]}))
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])])
    assert "HTTP 302" in await rejected(v, bearer(es_token(es_key)))
    assert elsewhere.call_count == 0


async def test_failed_jku_fetch_is_not_retried_at_once(make_verifier: MakeVerifier, router: respx.MockRouter,
                                                       clock: FakeClock,
                                                       es_key: tuple[Any, dict[str, Any]]) -> None:
    route = router.get(EHR_JKU).mock(side_effect=[httpx.Response(503),
                                                  httpx.Response(200, json={"keys": [es_key[1]]})])
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])], jku_min_refetch_s=30)
    await rejected(v, bearer(es_token(es_key)))
    assert "rate-limited" in await rejected(v, bearer(es_token(es_key)))
    assert route.call_count == 1
    clock.now = NOW + 31
    assert (await v.verify(bearer(es_token(es_key, now=clock.now)), audience=AUD)).iss == EHR_ISS
    assert route.call_count == 2


async def test_unusable_keys_in_a_fetched_set_are_skipped(
        make_verifier: MakeVerifier, router: respx.MockRouter, es_key: tuple[Any, dict[str, Any]]) -> None:
    hmac_jwk = {"kty": "oct", "kid": "shared-secret", "k": "c2VjcmV0"}
    router.get(EHR_JKU).mock(return_value=httpx.Response(200, json={"keys": [hmac_jwk, es_key[1]]}))
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])])
    assert (await v.verify(bearer(es_token(es_key)), audience=AUD)).iss == EHR_ISS
    token = forge_hs256(b"secret", header={"alg": "HS256", "typ": "JWT", "kid": "shared-secret"},
                        payload=claims())
    assert "not allowed" in await rejected(v, bearer(token))


# --- what the caller sees and what the log says -------------------------------------------------


async def test_auth_error_message_never_carries_the_reason(verifier: JwtVerifier,
                                                           es_key: tuple[Any, dict[str, Any]]) -> None:
    with pytest.raises(AuthError) as info:
        await verifier.verify(bearer(es_token(es_key, aud="https://wrong.example.com")), audience=AUD)
    err = info.value
    assert err.status_code == 401
    assert str(err) == "Authentication failed"
    body = json.dumps(err.operation_outcome())
    assert err.reason and err.reason not in body
    assert "aud" not in body and "wrong.example.com" not in body


async def test_log_names_the_check_iss_and_jti_but_not_the_token(
        verifier: JwtVerifier, es_key: tuple[Any, dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="blina_cds.auth")
    token = es_token(es_key, jti="jti-logged", iat=int(NOW) - 400, exp=int(NOW) - 100)
    await rejected(verifier, bearer(token))
    [record] = [r for r in caplog.records if r.name == "blina_cds.auth"]
    message = record.getMessage()
    assert "token expired" in message and EHR_ISS in message and "jti-logged" in message
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


# --- the trusted-issuers file -------------------------------------------------------------------


def test_trusted_issuers_file_is_parsed(tmp_path: Path, es_key: tuple[Any, dict[str, Any]]) -> None:
    path = issuers_file(tmp_path, issuers=[
        issuer_entry(EHR_ISS, keys=[es_key[1]], fhir_servers=[EHR_FHIR + "/"]),
        issuer_entry(OTHER_ISS, jku=[EHR_JKU], fhir_servers=[]),
    ])
    trusted = TrustedIssuers.from_file(path)
    ehr = trusted.get(EHR_ISS)
    assert ehr is not None and set(ehr.keys) == {es_key[1]["kid"]}
    assert ehr.keys[es_key[1]["kid"]].algorithms == {"ES384"}
    assert ehr.fhir_servers == (EHR_FHIR,)
    other = trusted.get(OTHER_ISS)
    assert other is not None and other.jku == (EHR_JKU,) and other.keys == {} and other.fhir_servers == ()
    assert len(trusted) == 2


def _es_jwk() -> dict[str, Any]:
    return make_es384_keypair(kid="k1")[1]


def _rsa_1024_jwk() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return {**RSAAlgorithm.to_jwk(small.public_key(), as_dict=True), "kid": "small"}


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not valid JSON"),
    ('{"issuers": {}}', '{"issuers": [...]}'),
    ('{"issuers": []}', "the list is empty"),
    (lambda: [{"jwks": {"keys": [_es_jwk()]}, "fhir_servers": []}], "issuers[0].iss: missing"),
    (lambda: [{"iss": EHR_ISS, "fhir_servers": []}], "needs 'jwks' and/or 'jku'"),
    (lambda: [issuer_entry(keys=[{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}])], "symmetric (HMAC)"),
    (lambda: [issuer_entry(keys=[{**_es_jwk(), "alg": "HS256"}])], "symmetric (HMAC)"),
    (lambda: [issuer_entry(jku=["http://ehr.example.org/jwks.json"])], "is not an https URL"),
    (lambda: [issuer_entry(keys=[{**_es_jwk(), "d": "secret"}])], "private key material"),
    (lambda: [issuer_entry(keys=[{k: v for k, v in _es_jwk().items() if k != "kid"}])], "missing 'kid'"),
    (lambda: [issuer_entry(keys=[_es_jwk(), _es_jwk()])], "duplicate kid 'k1'"),
    (lambda: [issuer_entry(keys=[{**_es_jwk(), "alg": "RS384"}])], "'alg' 'RS384' is not allowed"),
    (lambda: [issuer_entry(keys=[{**_es_jwk(), "x": "AAAA"}])], "not a valid EC public key"),
    (lambda: [issuer_entry(keys=[_rsa_1024_jwk()])], "RSA key of 1024 bits"),
    (lambda: [issuer_entry(keys=[_es_jwk()]), issuer_entry(keys=[_es_jwk()])], "duplicate issuer"),
    (lambda: [{"iss": EHR_ISS, "jku": [EHR_JKU]}], "fhir_servers: missing"),
    (lambda: [{**issuer_entry(jku=[EHR_JKU]), "jwk": {}}], "unknown field(s) ['jwk']"),
])
def test_trusted_issuers_file_errors_name_the_file_and_problem(
        tmp_path: Path, content: str | Callable[[], list[dict[str, Any]]], problem: str) -> None:
    if isinstance(content, str):
        path = tmp_path / "trusted-issuers.json"
        path.write_text(content, encoding="utf-8")
    else:
        path = issuers_file(tmp_path, issuers=content())
    with pytest.raises(ValueError) as info:
        TrustedIssuers.from_file(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_missing_trusted_issuers_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ValueError, match="absent.json: cannot read"):
        TrustedIssuers.from_file(path)


async def test_concurrent_calls_share_one_jku_fetch(make_verifier: MakeVerifier, router: respx.MockRouter,
                                                    es_key: tuple[Any, dict[str, Any]]) -> None:
    async def slow_jwks(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(200, json={"keys": [es_key[1]]})

    route = router.get(EHR_JKU).mock(side_effect=slow_jwks)
    v = make_verifier([issuer_entry(EHR_ISS, jku=[EHR_JKU])])
    callers = await asyncio.gather(*(v.verify(bearer(es_token(es_key)), audience=AUD) for _ in range(3)))
    assert [c.iss for c in callers] == [EHR_ISS] * 3
    assert route.call_count == 1
