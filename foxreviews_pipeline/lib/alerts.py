"""Alerts to a chat webhook: one Slack-compatible JSON message (`{"text": …}`) per POST.

The webhook URL carries its credential in its path (Slack, Mattermost, Teams, Discord all
work that way), so it never goes into a log line: a failure names the host only. A receiver
that is down or answers an error costs one warning, never an exception: an alert is a
courtesy on top of the UI, and the sensor or run that sends it must not fail for it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)

# Connection and read deadlines, each: a receiver slower than this is treated as down.
DEFAULT_TIMEOUT_S = 10.0
# Chat services cut or refuse longer messages (Slack truncates `text` at 40,000 characters);
# a reason this long is a stack trace, which the run's page shows in full.
MAX_TEXT_CHARS = 3000

Logger = logging.Logger | logging.LoggerAdapter[Any]


def url_host(url: str) -> str:
    """What may be logged of a webhook URL: its host (and port), never its path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


def shorten(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def post_alert(
    url: str, text: str, timeout: float = DEFAULT_TIMEOUT_S, *, logger: Logger | None = None
) -> bool:
    """POST `{"text": text}` to the webhook `url`; True when it answered 2xx. Otherwise one
    warning on `logger` (this module's by default) naming the host and the problem, and
    False: nothing is raised and nothing is retried."""
    logger = logger or log
    host = url_host(url)
    try:
        response = requests.post(
            url, json={"text": shorten(text)}, timeout=(timeout, timeout), allow_redirects=False
        )
    except requests.RequestException as exc:
        # The exception's own text names the URL (path and query): only its kind is logged.
        logger.warning(f"alert not sent to {host}: {_kind(exc)}")
        return False
    if not 200 <= response.status_code < 300:
        logger.warning(
            f"alert not sent to {host}: it answered HTTP {response.status_code} {response.reason or ''}".rstrip()
        )
        return False
    return True


def _kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (receiver down or unreachable)"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return "malformed URL"
    return type(exc).__name__
