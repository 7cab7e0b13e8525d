"""Client for INSEE's API Sirene 3.11 (establishments, deep paging, quota pacing, retries).

What INSEE documents and this client relies on:
- the key goes in the `X-INSEE-Api-Key-Integration` header;
- a key may make 30 requests per sliding minute, above which INSEE answers 429 (a
  Retry-After header is not documented, but honoured when sent);
- deep paging: `curseur=*` first, then each page's `header.curseurSuivant`, until a page
  returns the cursor it was sent (that page has `nombre: 0`); `tri` must not be combined
  with `curseur`;
- a search with no result answers 404 with INSEE's JSON header, which means zero rows;
- `/informations` tells, per collection, when data was last made available
  (`dateDerniereMiseADisposition`) and up to which processing time
  (`dateDernierTraitementMaximum`), in Paris local time, and which collections are up.

Nothing a server sends is trusted: headers are checked field by field, a read must end with
as many records as `header.total` announced, cursors must move forward and stop within what
`total` allows, and each request has an overall deadline (not only a per-read timeout).

Pacing is proactive (a leaky bucket with no burst, so a 35-page day takes about 35 x 2 s and
sees no 429), and retries are tenacity's exponential backoff with jitter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import requests.adapters
import urllib3
import urllib3.connection
from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket, StateBucket
from pyrate_limiter.abstracts.algorithm import GCRA
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.sirene.fields import in_api_order
from foxreviews_pipeline.lib.sirene.mapping import FLAT_FIELDS

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.insee.fr/api-sirene/3.11"
API_KEY_HEADER = "X-INSEE-Api-Key-Integration"
PAGE_SIZE = 1000
# Bytes asked of the socket per read; a read returns as soon as some have arrived.
_READ_CHUNK = 64 * 1024
# Above this many characters of form-encoded parameters, searches go as POST (INSEE accepts
# POST /siret with a form body precisely to lift the URL length limit).
MAX_GET_PARAMS_LENGTH = 2000
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# INSEE spells it "Établissements"; compared without accents or case.
ESTABLISHMENTS_COLLECTION = "etablissements"
ESTABLISHMENTS_LABEL = "Établissements"
# A day is about 35,000 records; a day beyond this is a mass update better read from the
# stock file (at 30 requests a minute, a million records already take 33 minutes).
MAX_DAY_RECORDS = 1_000_000
# INSEE documents that a SIRET may come twice in a read: paging may go this far past `total`.
DUPLICATES_MARGIN = 0.01
# Transient failures (429, 5xx, timeouts, dropped connections) of one day's fetch are retried
# until this much time has gone on failed attempts and the waits after them, `Retry-After`
# included (FOXREVIEWS_INSEE_RETRY_BUDGET_SECONDS).
DEFAULT_RETRY_BUDGET_S = 900.0
# How many times a cursor that comes back before `total` is reached is asked again.
MAX_CURSOR_REPEATS = 2

# The variables the mapping reads, plus the few the landed records keep for reading them
# later. Nested objects keep their shape; the historised ones come back inside
# `periodesEtablissement`. Pass `champs=None` to `iter_day` to get full records if INSEE
# ever answers 400 to one of these names.
CHAMPS: tuple[str, ...] = in_api_order(
    (
        *FLAT_FIELDS,
        "nic",
        "nombrePeriodesEtablissement",
        "sigleUniteLegale",
        "categorieJuridiqueUniteLegale",
        "etatAdministratifUniteLegale",
        "activitePrincipaleUniteLegale",
        "codeCedexEtablissement",
        "libelleCedexEtablissement",
        "codePaysEtrangerEtablissement",
        "identifiantAdresseEtablissement",
        "coordonneeLambertAbscisseEtablissement",
        "coordonneeLambertOrdonneeEtablissement",
        "dateFin",
    )
)


class InseeApiError(RuntimeError):
    """INSEE could not answer (after retries when the failure was transient), or answered
    something that breaks its documented contract.

    `permanent` is true when repeating the call cannot help (HTTP 400/401/403 and other
    non-retryable statuses, a day too large for the API): callers fail at once.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str | None = None,
        permanent: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.path = path
        self.permanent = permanent


class _Retryable(Exception):
    """A transient failure: the attempt is repeated after a backoff."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class FetchStats:
    """Counters of what fetching cost, for the asset's metadata."""

    api_calls: int = 0
    retries: int = 0
    http_429: int = 0
    pages: int = 0
    records: int = 0
    # The last read's `header.total` and the distinct SIRETs it brought.
    total: int | None = None
    distinct: int = 0
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Secret:
    """Holds the API key so that no repr, log line or traceback local ever shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def make_limiter(requests_per_minute: int, *, state_path: str | Path | None = None) -> Limiter:
    """A pyrate-limiter Limiter that spaces calls evenly at `requests_per_minute`, no burst.

    INSEE's quota is a sliding minute, so any burst at the start would be paid for by a 429
    at the end of the window: a generic cell-rate (leaky bucket) with burst 1 admits the
    first call at once and each next one 60/rpm seconds later. With `state_path`, the state
    lives in a file-locked SQLite file instead, so that several processes using one key
    (consecutive runs) share the quota: there, both the spacing and the per-minute count are
    enforced over a sliding log.
    """
    if requests_per_minute < 1:
        raise ValueError("requests_per_minute must be at least 1")
    spacing_ms = math.ceil(Duration.MINUTE.value / requests_per_minute)
    if state_path is None:
        rate = Rate(requests_per_minute, Duration.MINUTE, burst=1)
        return Limiter(StateBucket([rate], algorithm=GCRA()))
    rates = [Rate(1, spacing_ms), Rate(requests_per_minute, Duration.MINUTE)]
    Path(state_path).parent.mkdir(parents=True, exist_ok=True)
    shared = SQLiteBucket.init_from_file(
        rates, table="insee_quota", db_path=str(state_path), use_file_lock=True
    )
    return Limiter(shared)


def _normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return "".join(c for c in folded if not unicodedata.combining(c)).lower().strip()


def _parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def day_query(day: date) -> str:
    """INSEE's query for the establishments processed on `day` (a Paris-time date)."""
    d = day.isoformat()
    return f"dateDernierTraitementEtablissement:[{d} TO {d}]"


@dataclass(frozen=True)
class Publication:
    """What `/informations` says about a day of the establishments collection.

    Day D is complete when `dateDerniereMiseADisposition` is after the end of D (Paris) or
    `dateDernierTraitementMaximum` is past D, and neither the service nor the collection is
    reported down. INSEE often ends a day's processing before midnight and publishes it the
    next morning, so the processing time alone is not enough.
    """

    day: date
    collection: str
    made_available_at: datetime | None
    last_processed_at: datetime | None
    service_state: str
    collection_state: str

    @property
    def up(self) -> bool:
        return _is_up(self.service_state) and _is_up(self.collection_state)

    @property
    def complete(self) -> bool:
        if not self.up:
            return False
        end_of_day = datetime.combine(self.day + timedelta(days=1), datetime.min.time())
        available = self.made_available_at is not None and self.made_available_at >= end_of_day
        processed = self.last_processed_at is not None and self.last_processed_at.date() > self.day
        return available or processed

    def describe(self) -> str:
        """One line: the fields the decision rests on, their values and what they must be."""
        next_day = (self.day + timedelta(days=1)).isoformat()
        return (
            f"{self.collection} dateDerniereMiseADisposition={_stamp(self.made_available_at)} "
            f"(complete from {next_day}T00:00), "
            f"dateDernierTraitementMaximum={_stamp(self.last_processed_at)} "
            f"(complete once after {self.day.isoformat()}), "
            f"etatCollection={self.collection_state}, etatService={self.service_state}"
        )


# What a state INSEE did not report reads as: only a state reported, and not UP, is "down".
NOT_REPORTED = "not reported"


def _is_up(state: str) -> bool:
    return state == NOT_REPORTED or state.strip().upper() == "UP"


def _stamp(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value is not None else "missing"


def _informations_error(message: str) -> InseeApiError:
    return InseeApiError(f"INSEE /informations: {message}", path="/informations")


def _field(document: Mapping[str, Any], name: str) -> Any:
    """A field of `/informations` in any letter case, None when absent: INSEE's OpenAPI makes
    every field of the document optional."""
    if name in document:
        return document[name]
    wanted = name.casefold()
    for key, value in document.items():
        if str(key).casefold() == wanted:
            return value
    return None


def _paris_time(value: Any) -> datetime | None:
    """A Paris local time from `/informations` (INSEE sends no offset; one is converted);
    None when missing or unreadable: the day then waits, as any day not published yet."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(PARIS).replace(tzinfo=None)
    return parsed


def _entry_for_collection(
    info: Mapping[str, Any], list_field: str, name_field: str
) -> Mapping[str, Any] | None:
    """The establishments collection's entry of the list `list_field`, if there is one."""
    entries = _field(info, list_field)
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and _normalise(str(_field(entry, name_field) or "")) == (
            ESTABLISHMENTS_COLLECTION
        ):
            return entry
    return None


def _state(value: Any) -> str:
    return value.strip() if isinstance(value, str) and value.strip() else NOT_REPORTED


def parse_publication(info: Any, day: date) -> Publication:
    """Read `/informations` for `day`. Every field is optional (INSEE's OpenAPI) and read in
    any letter case: a state not reported is not "down", and only the publication dates
    decide; missing or unreadable dates leave the day waiting, within the usual bound."""
    if not isinstance(info, dict):
        raise _informations_error("the answer is not a JSON object")
    state_entry = _entry_for_collection(info, "etatsDesServices", "Collection") or {}
    dates = _entry_for_collection(info, "datesDernieresMisesAJourDesDonnees", "collection") or {}
    return Publication(
        day,
        str(_field(dates, "collection") or _field(state_entry, "Collection") or ESTABLISHMENTS_LABEL),
        _paris_time(_field(dates, "dateDerniereMiseADisposition")),
        _paris_time(_field(dates, "dateDernierTraitementMaximum")),
        _state(_field(info, "etatService")),
        _state(_field(state_entry, "etatCollection")),
    )


class _CallDeadline:
    """The one deadline of an HTTP call: connection, status line, headers and body.

    A per-read timeout never fires against a server that sends a byte now and then, in the
    headers as in the body. So a timer runs beside the call, and when the deadline passes it
    shuts down the call's socket (`socket.shutdown`, which ends a read blocked on it in
    another thread): the call then fails at once, and `expired` says why. The sockets are
    those the connections of `_DeadlineAdapter` report while this deadline is the current
    one (`with deadline:`).
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._over = False
        # What the call was waiting for: "headers" until they are parsed, then "body".
        self._phase = "headers"
        self.cut_during: str | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._token: Token[_CallDeadline | None] | None = None

    def __enter__(self) -> _CallDeadline:
        self._token = _CURRENT_DEADLINE.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._over = True
        self._timer.cancel()
        if self._token is not None:
            _CURRENT_DEADLINE.reset(self._token)

    @property
    def expired(self) -> bool:
        """Whether the deadline passed during the call (its connection is then unusable)."""
        with self._lock:
            return self._expired

    def headers_received(self) -> None:
        with self._lock:
            self._phase = "body"

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self._over or any(known is sock for known in self._sockets):
                return
            self._sockets.append(sock)
            expired = self._expired
        if expired:
            _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._expired = True
            self.cut_during = self._phase
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)


_CURRENT_DEADLINE: ContextVar[_CallDeadline | None] = ContextVar(
    "insee_call_deadline", default=None
)


def _shut_down(sock: socket.socket) -> None:
    # An OSError means it is already closed or never connected: nothing is blocked on it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _not_from_a_cut_call(record: logging.LogRecord) -> bool:
    """Drops what urllib3 logs about headers a deadline cut short (it would read as a
    malformed answer, with a traceback); the client says what happened."""
    deadline = _CURRENT_DEADLINE.get()
    return deadline is None or not deadline.expired


logging.getLogger("urllib3.connection").addFilter(_not_from_a_cut_call)


def _watch(sock: socket.socket | None) -> None:
    deadline = _CURRENT_DEADLINE.get()
    if deadline is not None:
        deadline.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """Reports its socket to the current call's deadline: once created, and at each request
    (a kept-alive connection is reused by the next call)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    """As `_WatchedHTTPConnection`; the plain socket is reported during the TLS handshake,
    the TLS one once connected."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {
    "http": _WatchedHTTPPool,
    "https": _WatchedHTTPSPool,
}


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that a `_CallDeadline` can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _BudgetSpent(stop_base):
    """Stops retrying when the next wait would take the client past its retry budget."""

    def __init__(self, client: InseeClient):
        self._client = client

    def __call__(self, retry_state: RetryCallState) -> bool:
        client = self._client
        return client.retry_spent_s + retry_state.upcoming_sleep > client.retry_budget_s


class InseeClient:
    """INSEE API Sirene 3.11, establishments collection.

    Each HTTP call (connection, status line, headers and body) ends within `deadline_s`,
    whatever the server trickles; `timeout` (connect, read) bounds each operation within it.
    `sleep` and `clock` are injectable so that tests can observe waits; `limiter` lets
    several clients share one quota (see `make_limiter`); a `session` given is used with the
    client's own adapter mounted for `base_url` (it carries the deadline).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        requests_per_minute: int = 30,
        *,
        timeout: float | tuple[float, float] = (10.0, 60.0),
        deadline_s: float = 120.0,
        max_day_records: int = MAX_DAY_RECORDS,
        max_attempts: int = 8,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 60.0,
        max_retry_after_s: float = 300.0,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        session: requests.Session | None = None,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not api_key:
            raise ValueError("an INSEE API key is required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.requests_per_minute = requests_per_minute
        self.timeout = timeout
        # The whole request (connection, headers, body) must be done within this.
        self.deadline_s = deadline_s
        self.max_day_records = max_day_records
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        # Time spent on failed attempts and on the waits after them, for all this client's
        # calls (one day's fetch): retries stop before it would exceed `retry_budget_s`.
        self.retry_budget_s = retry_budget_s
        self.retry_spent_s = 0.0
        self._key = _Secret(api_key)
        self._session = session or requests.Session()
        self._owns_session = session is None
        self._session.mount(self.base_url + "/", _DeadlineAdapter())
        self._limiter = limiter or make_limiter(requests_per_minute)
        # initial * 2**(n-1) plus up to `initial` of jitter, capped.
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
        )
        self._sleep = sleep
        self._clock = clock
        self.stats = FetchStats()
        # When each request left (after the limiter), on `clock`: what pacing can be read from.
        self.sent_at: deque[float] = deque(maxlen=10_000)

    def __repr__(self) -> str:
        return (
            f"InseeClient(base_url={self.base_url!r}, api_key='***', "
            f"requests_per_minute={self.requests_per_minute})"
        )

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> InseeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------

    def informations(self) -> dict[str, Any]:
        """The `/informations` document: service state and the collections' update dates."""
        status, body = self._call("GET", "/informations", {})
        if status != 200 or not isinstance(body, dict):
            raise InseeApiError(
                f"INSEE /informations answered HTTP {status}", status=status, path="/informations"
            )
        return body

    def publication(self, day: date, informations: dict[str, Any] | None = None) -> Publication:
        """Whether `day` is complete at INSEE, and the `/informations` fields that say so."""
        info = informations if informations is not None else self.informations()
        return parse_publication(info, day)

    def iter_pages(
        self,
        q: str,
        *,
        champs: Sequence[str] | None = CHAMPS,
        page_size: int = PAGE_SIZE,
        date_param: str | None = None,
        max_records: int = MAX_DAY_RECORDS,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a `/siret` search, read with cursors, as INSEE sent it (a SIRET can
        repeat: `landing.PartitionWriter` keeps each one's latest version). A 404 on the first call means no result.

        The read is checked against `header.total`: it fails (InseeApiError naming the
        counts) when fewer records came than announced, when more distinct SIRETs came, when
        a cursor comes back before the end or keeps advancing past what `total` allows, and
        when `total` is above `max_records`. Once exhausted without error, the read is whole.
        """
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        params: dict[str, str] = {"q": q, "nombre": str(page_size)}
        if champs:
            params["champs"] = ",".join(champs)
        if date_param:
            params["date"] = date_param
        cursor = "*"
        seen: set[str] = {cursor}
        sirets: set[str] = set()
        total: int | None = None
        received = calls = repeats = 0
        max_calls = 0
        self.stats.total, self.stats.distinct = None, 0
        while True:
            status, body = self._call("SEARCH", "/siret", {**params, "curseur": cursor})
            calls += 1
            if status == 404:
                if total is None:
                    total = 0
                break
            header = _page_header(body, cursor)
            records = body["etablissements"]
            if total is None:
                total = header["total"]
                self.stats.total = total
                if total > max_records:
                    raise InseeApiError(
                        f"INSEE announces {total} records for q={q!r}, more than the "
                        f"{max_records} a read may hold: load this day from the stock file",
                        path="/siret",
                        permanent=True,
                    )
                # Pages the announced total allows (with INSEE's duplicates), the final
                # page that repeats the cursor, and the repeats tolerated below.
                allowed = math.ceil(total * (1 + DUPLICATES_MARGIN) / page_size) + 1
                max_calls = allowed + 1 + MAX_CURSOR_REPEATS
            elif header["total"] != total:
                raise InseeApiError(
                    f"INSEE changed header.total from {total} to {header['total']} while "
                    f"paging (cursor {cursor!r}, {received} records received): the day "
                    "changed during the read",
                    path="/siret",
                )
            if records:
                received += len(records)
                sirets.update(record["siret"] for record in records)
                self.stats.pages += 1
                self.stats.records += len(records)
                self.stats.distinct = len(sirets)
                yield records
            next_cursor = header["curseurSuivant"]
            if next_cursor == cursor:
                if received >= total:
                    break
                repeats += 1
                if repeats > MAX_CURSOR_REPEATS:
                    raise InseeApiError(
                        f"INSEE repeated cursor {cursor!r} {repeats} times after {received} "
                        f"of the {total} records announced",
                        path="/siret",
                    )
                log.warning(
                    "INSEE repeated cursor %r after %d of %d records; asking again",
                    cursor, received, total,
                )
            else:
                repeats = 0
                if next_cursor in seen:
                    raise InseeApiError(
                        f"INSEE sent cursor {next_cursor!r} a second time after {received} of "
                        f"the {total} records announced; stopping to avoid a loop",
                        path="/siret",
                    )
                seen.add(next_cursor)
                cursor = next_cursor
            if calls >= max_calls:
                raise InseeApiError(
                    f"INSEE kept paging past the {total} records announced: {calls} calls "
                    f"of {page_size}, {received} records received, next cursor {cursor!r}",
                    path="/siret",
                )
        self.stats.total = total
        self.stats.distinct = len(sirets)
        if received < total:
            raise InseeApiError(
                f"INSEE announced {total} records but sent {received} "
                f"({len(sirets)} distinct SIRETs) for q={q!r}",
                path="/siret",
            )
        if len(sirets) > total:
            raise InseeApiError(
                f"INSEE sent {len(sirets)} distinct SIRETs, more than the {total} announced, "
                f"for q={q!r}",
                path="/siret",
            )

    def iter_day(
        self, day: date, *, champs: Sequence[str] | None = CHAMPS, page_size: int = PAGE_SIZE
    ) -> Iterator[list[dict[str, Any]]]:
        """The pages of establishments whose `dateDernierTraitementEtablissement` is `day`."""
        return self.iter_pages(
            day_query(day), champs=champs, page_size=page_size, max_records=self.max_day_records
        )

    # -- HTTP ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        started = self._clock()
        retrying = Retrying(
            stop=stop_any(stop_after_attempt(self.max_attempts), _BudgetSpent(self)),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=False,
        )
        try:
            return retrying(self._attempt, method, path, params)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            attempts = exc.last_attempt.attempt_number
            if attempts < self.max_attempts:
                why = (
                    f"the retry budget of {self.retry_budget_s:g} s for the day is spent "
                    f"({self.retry_spent_s:.0f} s used, {attempts} attempts of this call)"
                )
            else:
                why = f"after {attempts} attempts"
            raise InseeApiError(
                f"INSEE {path} still failing, {why}: {last}",
                status=getattr(last, "status", None),
                path=path,
            ) from None
        finally:
            self.stats.duration_s += self._clock() - started

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after_s)
        return self._backoff(retry_state)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self.stats.retries += 1
        self.retry_spent_s += retry_state.upcoming_sleep
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "INSEE attempt %d failed (%s); retrying in %.1f s",
            retry_state.attempt_number,
            exc,
            wait,
        )

    def _request_timeout(self) -> tuple[float, float]:
        """Per-operation timeouts, never longer than the overall deadline."""
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout,) * 2
        return min(connect, self.deadline_s), min(read, self.deadline_s)

    def _read_body(self, response: requests.Response, chunks: list[bytes]) -> bytes:
        """The whole body. `read1` returns as soon as some bytes arrived; a server trickling
        them is cut off by the call's deadline, which shuts the socket down."""
        while True:
            chunk = response.raw.read1(_READ_CHUNK, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def _past_deadline(
        self, path: str, deadline: _CallDeadline, chunks: list[bytes]
    ) -> _Retryable:
        if deadline.cut_during == "headers":
            got = "the status line and headers had not all come"
        else:
            got = f"{sum(map(len, chunks))} bytes of body received"
        return _Retryable(
            f"no complete answer from {path} within the {self.deadline_s:g} s deadline ({got})"
        )

    def _attempt(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        started = self._clock()
        try:
            return self._attempt_once(method, path, params)
        except _Retryable:
            self.retry_spent_s += self._clock() - started
            raise

    def _attempt_once(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        self._limiter.try_acquire("insee")
        url = self.base_url + path
        headers = {API_KEY_HEADER: self._key.reveal(), "Accept": "application/json"}
        encoded = urlencode(params)
        self.stats.api_calls += 1
        self.sent_at.append(self._clock())
        timeout = self._request_timeout()
        response: requests.Response | None = None
        chunks: list[bytes] = []
        deadline = _CallDeadline(self.deadline_s)
        try:
            with deadline:
                if method == "SEARCH" and len(encoded) > MAX_GET_PARAMS_LENGTH:
                    response = self._session.post(
                        url,
                        data=encoded,
                        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                        timeout=timeout,
                        stream=True,
                    )
                else:
                    response = self._session.get(
                        url, params=params or None, headers=headers, timeout=timeout, stream=True
                    )
                deadline.headers_received()
                raw = self._read_body(response, chunks)
        except BaseException as exc:
            if response is not None:
                response.close()  # drops the connection: a half-read one cannot be reused
            if deadline.expired and isinstance(exc, Exception):
                raise self._past_deadline(path, deadline, chunks) from None
            if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
                raise _Retryable(f"timeout on {path} ({type(exc).__name__})") from None
            if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                                urllib3.exceptions.HTTPError)):
                raise _Retryable(
                    f"truncated response from {path} ({type(exc).__name__})"
                ) from None
            if isinstance(exc, (requests.ConnectionError, OSError)):
                raise _Retryable(
                    f"connection failure on {path} ({type(exc).__name__})"
                ) from None
            raise
        if deadline.expired:
            # The socket was shut down as the body ended: what was read may be cut short.
            response.close()
            raise self._past_deadline(path, deadline, chunks)
        response.raw.release_conn()  # read to the end: the connection goes back to the pool
        status = response.status_code

        if status in RETRYABLE_STATUSES:
            if status == 429:
                self.stats.http_429 += 1
            raise _Retryable(
                f"HTTP {status} on {path}{_insee_message(raw)}",
                status=status,
                retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if status == 404 and path == "/siret":
            body = _json_or_none(raw)
            if isinstance(body, dict) and isinstance(body.get("header"), dict):
                return 404, body
            raise InseeApiError(
                f"HTTP 404 on {path} without INSEE's answer: check the base URL {self.base_url!r}",
                status=404,
                path=path,
                permanent=True,
            )
        if status in (401, 403):
            raise InseeApiError(
                f"INSEE refused the API key (HTTP {status} on {path}){_insee_message(raw)}",
                status=status,
                path=path,
                permanent=True,
            )
        if status != 200:
            raise InseeApiError(
                f"INSEE answered HTTP {status} on {path}{_insee_message(raw)}",
                status=status,
                path=path,
                permanent=True,
            )

        body = _json_or_none(raw)
        if not isinstance(body, dict):
            raise _Retryable(f"invalid or truncated JSON from {path} ({len(raw)} bytes)")
        if path == "/siret":
            header = body.get("header")
            records = body.get("etablissements")
            if not isinstance(header, dict):
                raise _Retryable(f"malformed page from {path}: no header")
            if not isinstance(records, list):
                raise _Retryable(f"malformed page from {path}: no etablissements list")
            announced = _header_int(header, "nombre")
            if announced != len(records):
                raise _Retryable(
                    f"incomplete page from {path}: {len(records)} records, {announced} announced"
                )
        return status, body


def _header_int(header: dict[str, Any], field: str) -> int:
    value = header.get(field)
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise InseeApiError(
            f"INSEE /siret: header.{field} is missing or not a count: {value!r}", path="/siret"
        )
    return value


def _page_header(body: dict[str, Any], cursor: str) -> dict[str, Any]:
    """The fields of a `/siret` page header the read relies on, checked one by one."""
    header = body["header"]
    total = _header_int(header, "total")
    next_cursor = header.get("curseurSuivant")
    if not isinstance(next_cursor, str) or not next_cursor:
        raise InseeApiError(
            f"INSEE /siret: header.curseurSuivant is missing or empty (sent curseur {cursor!r})",
            path="/siret",
        )
    echoed = header.get("curseur")
    if echoed is not None and echoed != cursor:
        raise InseeApiError(
            f"INSEE /siret: header.curseur is {echoed!r}, not the cursor sent ({cursor!r})",
            path="/siret",
        )
    for record in body["etablissements"]:
        if not isinstance(record, dict) or not isinstance(record.get("siret"), str):
            raise InseeApiError(
                "INSEE /siret: a record of etablissements has no siret", path="/siret"
            )
    return {"total": total, "curseurSuivant": next_cursor}


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _insee_message(raw: bytes) -> str:
    """INSEE's own explanation from an error body (`header.message`), when there is one."""
    body = _json_or_none(raw)
    message = None
    if isinstance(body, dict):
        header = body.get("header")
        if isinstance(header, dict):
            message = header.get("message")
        message = message or body.get("message")
    return f": {message}" if message else ""

