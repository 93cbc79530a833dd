"""The HTTP layer under lyricsgenius: retries, backoff, auth errors and request counts.

Why an adapter: lyricsgenius 3.15 retries only timeouts, raises a bare AssertionError on 401
and 429, ignores Retry-After, and turns a throttled (429) lyrics page into empty lyrics. Every
request it makes goes through one `requests.Session` (`Sender._session`), so mounting
`RetryingAdapter` on that session puts all requests under our policy while lyricsgenius keeps
building URLs and parsing JSON and HTML. The adapter:

- retries 429, 5xx, timeouts and connection errors up to `max_retries` times, waiting
  Retry-After (seconds or an HTTP date) when the server sends it, else
  `backoff_seconds * 2**attempt` (capped at `MAX_BACKOFF_SECONDS`);
- raises `LyricgenAuthError` at once on 401/403 (no retry);
- raises `GeniusRequestError` (one line, URL and status, never headers) for any other 4xx and
  when retries are exhausted, so lyricsgenius never parses an error page as lyrics.

Pitfalls: `_session` is lyricsgenius's private attribute; `make_genius` checks it is a
`requests.Session` so a future rename fails loudly instead of silently skipping retries. The
token only lives in lyricsgenius's Authorization header; messages built here carry URLs (no
token) and still go through `redact` as a guard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import sleep
from typing import Any

import requests
from lyricsgenius import Genius
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from lyricgen.errors import LyricgenAuthError

logger = logging.getLogger(__name__)

AUTH_STATUSES = frozenset({401, 403})
MAX_BACKOFF_SECONDS = 300.0
_RETRY_AFTER = Retry()  # only for its Retry-After parser (seconds or HTTP date)


class GeniusRequestError(Exception):
    """A request that failed for good (non-retryable status or retries exhausted)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_seconds: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            return retry_after
        return min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)


@dataclass
class HttpStats:
    requests: int = 0
    retries: int = 0


def wait(seconds: float) -> None:
    """The one place the scraper sleeps for a retry (tests patch `genius_http.sleep`)."""
    if seconds > 0:
        sleep(seconds)


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (an HTTP date becomes seconds from now); None if absent/bad."""
    if not value:
        return None
    try:
        return _RETRY_AFTER.parse_retry_after(value)
    except InvalidHeader:
        logger.warning("ignoring unparseable Retry-After header %r", value)
        return None


class RetryingAdapter(HTTPAdapter):
    """An HTTPAdapter whose `send` applies `RetryPolicy` (see the module docstring)."""

    def __init__(self, policy: RetryPolicy, stats: HttpStats, token_env: str) -> None:
        super().__init__()
        self.policy = policy
        self.stats = stats
        self.token_env = token_env

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        attempt = 0
        while True:
            self.stats.requests += 1
            retry_after: float | None = None
            try:
                response = super().send(request, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                failure = type(exc).__name__
            else:
                status = response.status_code
                if status < 400:
                    return response
                response.close()
                if status in AUTH_STATUSES:
                    raise LyricgenAuthError(
                        f"Genius rejected the access token in ${self.token_env} "
                        f"(HTTP {status} on {_where(request)}); check the token, no retry")
                if status != 429 and status < 500:
                    raise GeniusRequestError(f"HTTP {status} on {_where(request)}")
                failure = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= self.policy.max_retries:
                raise GeniusRequestError(
                    f"{failure} on {_where(request)} after {attempt + 1} attempts")
            delay = self.policy.delay(attempt, retry_after)
            logger.warning("%s on %s; retry %d/%d in %.1f s", failure, _where(request),
                           attempt + 1, self.policy.max_retries, delay)
            self.stats.retries += 1
            wait(delay)
            attempt += 1


def _where(request: requests.PreparedRequest) -> str:
    """Host and path of a request, without the query string."""
    return (request.url or "?").split("?", 1)[0]


def make_genius(token: str, token_env: str, policy: RetryPolicy, stats: HttpStats,
                sleep_seconds: float, timeout_seconds: float) -> Genius:
    """A lyricsgenius client whose every request goes through `RetryingAdapter`.

    lyricsgenius's own retries are off (retries=0) and it sleeps `sleep_seconds` after each
    request (politeness). Section headers are kept; non-songs are skipped.
    """
    genius = Genius(token, timeout=timeout_seconds, sleep_time=sleep_seconds, retries=0,
                    remove_section_headers=False, skip_non_songs=True, user_agent="lyricgen")
    session = getattr(genius, "_session", None)
    if not isinstance(session, requests.Session):
        raise RuntimeError("lyricsgenius no longer exposes Sender._session; update genius_http")
    adapter = RetryingAdapter(policy, stats, token_env)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return genius
