"""A small JSON-over-HTTP client on the standard library, for talking to CI providers.

Every call has a time-out. 5xx answers and connection errors are retried with
exponential backoff and full jitter (bounded attempts). Rate limits are honoured:
429 or 403 with `Retry-After`, or with `X-RateLimit-Remaining: 0` and
`X-RateLimit-Reset` (GitHub's primary limit), wait as told, up to a maximum; a longer
wait is handed back to the caller as `ProviderUnavailable(retry_after_seconds=...)`.
Anything else that is not 2xx/3xx raises `ProviderRejected` with a message that says
what to do. Clock, sleep and randomness are injected so tests never really wait.

A POST whose answer never arrived (read time-out) is not re-sent here: the provider
may have acted. `ProviderUnavailable` goes back to the coordinator, and the executor's
state check on the next attempt finds out whether the action already happened.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.coordinator.executors.base import ProviderRejected, ProviderUnavailable

log = logging.getLogger(__name__)

# Methods that do the same thing when sent twice, so safe to re-send after a time-out.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

# Status code -> what the operator should check. Providers add their own hint.
DEFAULT_HINTS: dict[int, str] = {
    400: "the request was malformed; check the action's parameters",
    401: "check the credentials (token missing, expired or revoked)",
    403: "check that the token has the permission this call needs",
    404: "check the identifiers in the action (repository, project, run, job or runner)",
    409: "the resource is in a state that does not allow this; look at it at the provider",
    422: "the provider could not process this request; check the action's parameters",
}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0
    # The longest rate-limit wait we sit through; longer waits go back to the coordinator.
    max_rate_limit_wait_seconds: float = 60.0


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    method: str = ""
    path: str = ""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            return {}

    def provider_message(self) -> str:
        data = self.json()
        if isinstance(data, dict):
            for key in ("message", "error", "error_description"):
                if key in data:
                    return str(data[key])
        text = self.body.decode("utf-8", "replace").strip()
        return text[:200]


class _Counter(threading.local):
    count = 0


@dataclass
class HttpClient:
    """JSON client for one provider at one base URL (which may carry a path prefix)."""

    base_url: str
    provider_name: str
    timeout_seconds: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_headers: Mapping[str, str] = field(default_factory=dict)
    # status -> hint; the provider's hints override DEFAULT_HINTS.
    hints: Mapping[int, str] = field(default_factory=dict)
    keep_cookies: bool = False
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    random: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{self.provider_name} base URL must be http(s)://host[:port][/path], "
                             f"got {self.base_url!r}")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._prefix = parsed.path.rstrip("/")
        self._cookies: dict[str, str] = {}
        self._cookie_lock = threading.Lock()
        self._counter = _Counter()

    # -- bookkeeping -------------------------------------------------------------

    def calls_in_this_thread(self) -> int:
        """Requests sent by the calling thread so far (executors report the difference)."""
        return self._counter.count

    def clear_cookies(self) -> None:
        with self._cookie_lock:
            self._cookies.clear()

    # -- the call ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        accept_statuses: tuple[int, ...] = (),
    ) -> HttpResponse:
        """Send one logical request (retrying as the policy allows) and return the answer.

        2xx and 3xx answers, and any status in `accept_statuses`, are returned; others
        raise ProviderRejected (permanent) or ProviderUnavailable (transient, exhausted).
        """
        method = method.upper()
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        body: bytes | None = None
        send_headers: dict[str, str] = {"Accept": "application/json", **self.default_headers}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            send_headers["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            send_headers["Content-Type"] = "application/x-www-form-urlencoded"
        if headers:
            send_headers.update(headers)
        what = f"{method} {path}"

        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._send_once(method, target, body, send_headers)
            except TimeoutError as exc:
                if method not in IDEMPOTENT_METHODS:
                    raise ProviderUnavailable(
                        f"{self.provider_name} did not answer {what} within {self.timeout_seconds:g} s; "
                        "it may or may not have acted, so the action will be checked and retried later"
                    ) from exc
                if attempt >= self.retry.max_attempts:
                    raise ProviderUnavailable(
                        f"{self.provider_name} did not answer {what} within {self.timeout_seconds:g} s "
                        f"in {attempt} attempts; retry later"
                    ) from exc
                self._backoff(attempt, what, f"time-out after {self.timeout_seconds:g} s")
                continue
            except (ConnectionError, OSError, http.client.HTTPException) as exc:
                if attempt >= self.retry.max_attempts:
                    raise ProviderUnavailable(
                        f"could not reach {self.provider_name} at {self.base_url} for {what} "
                        f"after {attempt} attempts ({exc}); check that it is up and reachable, "
                        "the action will be retried later"
                    ) from exc
                self._backoff(attempt, what, f"connection error: {exc}")
                continue

            status = response.status
            if 200 <= status < 400 or status in accept_statuses:
                return response
            wait = self._rate_limit_wait(response)
            if wait is not None:
                if wait > self.retry.max_rate_limit_wait_seconds or attempt >= self.retry.max_attempts:
                    raise ProviderUnavailable(
                        f"{self.provider_name} rate limit reached for {what} (answered {status}); "
                        f"retry after {wait:.0f} s",
                        retry_after_seconds=wait,
                    )
                log.info("%s rate limit on %s: waiting %.1f s as told", self.provider_name, what, wait)
                self.sleep(wait)
                continue
            if status >= 500:
                if attempt >= self.retry.max_attempts:
                    raise ProviderUnavailable(
                        f"{self.provider_name} answered {status} for {what} {attempt} times "
                        f"({response.provider_message()}); it is having trouble, the action will be "
                        "retried later"
                    )
                self._backoff(attempt, what, f"answered {status}")
                continue
            raise self.rejection(response)

    def rejection(self, response: HttpResponse) -> ProviderRejected:
        """The error for a permanent refusal: what was asked, what was answered, what to do."""
        hint = self.hints.get(response.status) or DEFAULT_HINTS.get(
            response.status, "look at the provider's answer and the action's parameters"
        )
        provider_message = response.provider_message()
        said = f" ({provider_message})" if provider_message else ""
        return ProviderRejected(
            f"{self.provider_name} answered {response.status} for {response.method} {response.path}{said}: "
            f"{hint}",
            status=response.status,
            provider_message=provider_message,
        )

    # -- internals ---------------------------------------------------------------

    def _rate_limit_wait(self, response: HttpResponse) -> float | None:
        """Seconds to wait if this answer is a rate limit, else None."""
        if response.status not in (403, 429):
            return None
        retry_after = response.header("retry-after")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return self.retry.max_delay_seconds
        if response.header("x-ratelimit-remaining") == "0" and response.header("x-ratelimit-reset"):
            try:
                reset_at = float(response.header("x-ratelimit-reset"))
            except ValueError:
                return self.retry.max_delay_seconds
            return max(0.0, reset_at - self.clock()) + 1.0  # the reset second itself, plus skew
        if response.status == 429:
            return self.retry.max_delay_seconds
        return None

    def _backoff(self, attempt: int, what: str, reason: str) -> None:
        ceiling = min(self.retry.max_delay_seconds, self.retry.base_delay_seconds * 2 ** (attempt - 1))
        delay = self.random() * ceiling  # full jitter: spreads retries of many workers
        log.warning("%s %s: %s; retry %d in %.2f s", self.provider_name, what, reason, attempt, delay)
        self.sleep(delay)

    def _send_once(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> HttpResponse:
        connection_type = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(self._host, self._port, timeout=self.timeout_seconds)
        headers = dict(headers)
        if self.keep_cookies:
            with self._cookie_lock:
                if self._cookies:
                    headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        self._counter.count += 1
        try:
            connection.request(method, target, body=body, headers=headers)
            raw = connection.getresponse()
            data = raw.read()
            response_headers = {k.lower(): v for k, v in raw.getheaders()}
            if self.keep_cookies:
                for name, value in raw.getheaders():
                    if name.lower() == "set-cookie":
                        pair = value.split(";", 1)[0]
                        if "=" in pair:
                            key, _, val = pair.partition("=")
                            with self._cookie_lock:
                                self._cookies[key.strip()] = val.strip()
            path = target[len(self._prefix):].split("?", 1)[0]
            return HttpResponse(raw.status, response_headers, data, method=method, path=path)
        finally:
            connection.close()


def basic_authorization(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
