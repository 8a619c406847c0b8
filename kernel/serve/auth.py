"""API keys and rate limits of `kernel serve`.

Keys are stored hashed in the configuration (`[serve.keys.NAME] hash = "..."`): either
`sha256:HEX` (for long random keys, such as those `kernel serve hash-key --generate`
makes) or `scrypt:N:R:P:SALT:HASH` (salted and slow, for keys people choose). A request
sends its key as `Authorization: Bearer KEY` (what the OpenAI SDK sends) or `X-Api-Key`.
A key may be limited to some functions, collections and models, and has a rate limit
(requests per minute, a token bucket of ten seconds' worth).

Verifying a scrypt hash costs tens of milliseconds, so each key presented is checked once
and the verdict (by the sha256 of the key, never the key) cached; the cache is bounded, at
most `MAX_VERIFYING` keys are checked at once, and a client address that presents
`FAILED_BURST` wrong keys is refused (429) before any check until its bucket refills
(`FAILED_PER_MINUTE`): guessing keys, or burning the server's CPU with them, is slow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .problems import HttpProblem

if TYPE_CHECKING:
    from ..functions import KernelFunction
    from ..settings import ServeKeySettings, ServeSettings

__all__ = ["ANONYMOUS", "KeyRing", "Principal", "RateLimiter", "generate_key", "hash_key", "matches",
           "verify_key"]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_CACHE_SIZE = 4096
MAX_VERIFYING = 4
FAILED_BURST, FAILED_PER_MINUTE = 10, 10.0
_MAX_CLIENTS = 10_000


def generate_key() -> str:
    """A new random API key (256 bits)."""
    return "ksk-" + secrets.token_urlsafe(32)


def hash_key(key: str, scheme: Literal["scrypt", "sha256"] = "scrypt") -> str:
    """The stored form of `key`: `scrypt:N:R:P:SALT:HASH` (salted, slow) or `sha256:HEX`."""
    if not key:
        raise ValueError("an API key cannot be empty")
    if scheme == "sha256":
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    if scheme != "scrypt":
        raise ValueError(f"unknown hash scheme {scheme!r}; use scrypt or sha256")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{salt.hex()}:{digest.hex()}"


def verify_key(key: str, stored: str) -> bool:
    """Whether `key` matches its stored hash (constant-time comparison)."""
    kind, _, rest = stored.partition(":")
    if kind == "sha256":
        return hmac.compare_digest(hashlib.sha256(key.encode()).hexdigest(), rest)
    if kind == "scrypt":
        try:
            n, r, p, salt, digest = rest.split(":")
            computed = hashlib.scrypt(key.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                                      dklen=len(digest) // 2, maxmem=2**28)
        except (ValueError, MemoryError):
            return False
        return hmac.compare_digest(computed.hex(), digest)
    return False


def matches(names: Iterable[str], fn: KernelFunction) -> bool:
    """Whether `fn` is among `names` (`plugin`, `plugin.*` or `plugin.function`)."""
    for name in names:
        name = name.strip()
        if name in (fn.plugin_name, f"{fn.plugin_name}.*", fn.fully_qualified_name, fn.tool_name):
            return True
    return False


@dataclass(slots=True)
class Principal:
    """Who is calling: a configured key (by name), or everyone when no key is configured."""

    name: str
    functions: list[str] | None = None
    collections: list[str] | None = None
    models: list[str] | None = None
    rate_limit: float | None = None

    def may_call(self, fn: KernelFunction) -> bool:
        return self.functions is None or matches(self.functions, fn)

    def may_use_collection(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def may_use_model(self, model: str) -> bool:
        return self.models is None or model in self.models


ANONYMOUS = "anonymous"


class KeyRing:
    """The configured keys; `authenticate(headers)` finds the caller."""

    def __init__(self, settings: ServeSettings) -> None:
        self.open = not settings.keys
        self.default_rate = settings.rate_limit
        self.keys: dict[str, ServeKeySettings] = dict(settings.keys)
        self._seen: OrderedDict[str, str | None] = OrderedDict()  # sha256(key) -> key name or None
        self._verifying = asyncio.Semaphore(MAX_VERIFYING)
        self._failures: OrderedDict[str, _Bucket] = OrderedDict()  # client address -> wrong keys allowed

    def principal(self, name: str) -> Principal:
        if name == ANONYMOUS and self.open:
            return Principal(ANONYMOUS, rate_limit=self.default_rate)
        key = self.keys[name]
        return Principal(name, key.functions, key.collections, key.models,
                         key.rate_limit if key.rate_limit is not None else self.default_rate)

    @staticmethod
    def presented(headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        api_key = headers.get("x-api-key", "").strip()
        return api_key or None

    async def authenticate(self, headers: Mapping[str, str], client: str = "", now: float | None = None) -> Principal:
        """The caller of a request with these headers, from the address `client`; 401
        without a valid key (when keys are configured), 429 after too many wrong ones."""
        if self.open:
            return self.principal(ANONYMOUS)
        key = self.presented(headers)
        if key is None:
            raise HttpProblem(401, "missing API key",
                              "send the key as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'",
                              headers={"WWW-Authenticate": "Bearer"})
        now = time.monotonic() if now is None else now
        bucket = self._failures.get(client)
        if bucket is not None:
            bucket.tokens = min(float(FAILED_BURST), bucket.tokens + (now - bucket.at) * FAILED_PER_MINUTE / 60.0)
            bucket.at = now
            if bucket.tokens < 1.0:
                wait = math.ceil((1.0 - bucket.tokens) * 60.0 / FAILED_PER_MINUTE)
                raise HttpProblem(429, "too many wrong API keys",
                                  f"this address gave {FAILED_BURST} wrong keys; retry in {wait} s",
                                  headers={"Retry-After": str(wait)})
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        if fingerprint in self._seen:
            name = self._seen[fingerprint]
            self._seen.move_to_end(fingerprint)
        else:
            async with self._verifying:
                name = await asyncio.to_thread(self._find, key)
            self._seen[fingerprint] = name
            if len(self._seen) > _CACHE_SIZE:
                self._seen.popitem(last=False)
        if name is None:
            if bucket is None:
                bucket = self._failures[client] = _Bucket(float(FAILED_BURST), now)
                if len(self._failures) > _MAX_CLIENTS:
                    self._failures.popitem(last=False)
            bucket.tokens -= 1.0
            raise HttpProblem(401, "invalid API key", "the key given matches no configured key",
                              headers={"WWW-Authenticate": "Bearer"})
        return self.principal(name)

    def _find(self, key: str) -> str | None:
        found = None
        for name, entry in self.keys.items():  # every hash is checked: the time does not tell which matched
            if verify_key(key, entry.hash) and found is None:
                found = name
        return found


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per key: `rate` requests per minute, bursts of ten seconds' worth
    (at least one request)."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def check(self, principal: Principal, now: float | None = None) -> None:
        """Take one token of the caller's bucket, or raise 429 with Retry-After."""
        rate = principal.rate_limit
        if rate is None:
            return
        now = time.monotonic() if now is None else now
        per_second = rate / 60.0
        capacity = max(1.0, per_second * 10.0)
        bucket = self.buckets.get(principal.name)
        if bucket is None:
            bucket = self.buckets[principal.name] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = math.ceil((1.0 - bucket.tokens) / per_second)
        raise HttpProblem(429, "rate limit exceeded",
                          f"this key may make {rate:g} requests per minute; retry in {wait} s",
                          headers={"Retry-After": str(wait)})
