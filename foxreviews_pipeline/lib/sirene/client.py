"""Client for INSEE's API Sirene 3.11 (establishments, deep paging, quota pacing, retries).

What INSEE documents and this client relies on:
- the key goes in the `X-INSEE-Api-Key-Integration` header;
- a key may make 30 requests per sliding minute, above which INSEE answers 429 (a
  Retry-After header is not documented, but honoured when sent);
- deep paging: `curseur=*` first, then each page's `header.curseurSuivant`, until a page
  returns the cursor it was sent (that page has `nombre: 0`); `tri` must not be combined
  with `curseur`;
- a search with no result answers 404 with INSEE's JSON header, which means zero rows.

Pacing is proactive (a leaky bucket with no burst, so a 35-page day takes about 35 x 2 s and
sees no 429), and retries are tenacity's exponential backoff with jitter.
"""

from __future__ import annotations

import json
import logging
import math
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket, StateBucket
from pyrate_limiter.abstracts.algorithm import GCRA
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.insee.fr/api-sirene/3.11"
API_KEY_HEADER = "X-INSEE-Api-Key-Integration"
PAGE_SIZE = 1000
# Above this many characters of form-encoded parameters, searches go as POST (INSEE accepts
# POST /siret with a form body precisely to lift the URL length limit).
MAX_GET_PARAMS_LENGTH = 2000
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
ESTABLISHMENTS_COLLECTION = "etablissements"

# Only the variables the pipeline maps (SPEC §2.1). Nested objects keep their shape; the
# historised ones come back inside `periodesEtablissement`. Pass `champs=None` to
# `iter_day` to get full records if INSEE ever answers 400 to one of these names.
CHAMPS: tuple[str, ...] = (
    "siren",
    "nic",
    "siret",
    "statutDiffusionEtablissement",
    "dateCreationEtablissement",
    "trancheEffectifsEtablissement",
    "dateDernierTraitementEtablissement",
    "etablissementSiege",
    "nombrePeriodesEtablissement",
    "activitePrincipaleNAF25Etablissement",
    # uniteLegale
    "denominationUniteLegale",
    "sigleUniteLegale",
    "nomUniteLegale",
    "nomUsageUniteLegale",
    "prenom1UniteLegale",
    "prenomUsuelUniteLegale",
    "categorieJuridiqueUniteLegale",
    "etatAdministratifUniteLegale",
    "activitePrincipaleUniteLegale",
    # adresseEtablissement
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "codeCommuneEtablissement",
    "codeCedexEtablissement",
    "libelleCedexEtablissement",
    "codePaysEtrangerEtablissement",
    "identifiantAdresseEtablissement",
    "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
    # periodesEtablissement
    "dateFin",
    "dateDebut",
    "etatAdministratifEtablissement",
    "enseigne1Etablissement",
    "denominationUsuelleEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
)


class InseeApiError(RuntimeError):
    """INSEE could not answer (after retries when the failure was transient)."""

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None):
        super().__init__(message)
        self.status = status
        self.path = path


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
        bucket = StateBucket([rate], algorithm=GCRA())
        return Limiter(bucket)
    rates = [Rate(1, spacing_ms), Rate(requests_per_minute, Duration.MINUTE)]
    Path(state_path).parent.mkdir(parents=True, exist_ok=True)
    bucket = SQLiteBucket.init_from_file(
        rates, table="insee_quota", db_path=str(state_path), use_file_lock=True
    )
    return Limiter(bucket)


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


def latest_per_siret(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per SIRET: the one with the greatest `dateDernierTraitementEtablissement`
    (ISO strings compare chronologically; on a tie, the last one seen wins). Keeps the order
    in which SIRETs first appeared."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        siret = record.get("siret")
        current = best.get(siret)
        if current is None or (record.get("dateDernierTraitementEtablissement") or "") >= (
            current.get("dateDernierTraitementEtablissement") or ""
        ):
            best[siret] = record
    return list(best.values())


class InseeClient:
    """INSEE API Sirene 3.11, establishments collection.

    `sleep` and `clock` are injectable so that tests can observe waits; `limiter` lets
    several clients share one quota (see `make_limiter`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        requests_per_minute: int = 30,
        *,
        timeout: float | tuple[float, float] = (10.0, 60.0),
        max_attempts: int = 8,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 60.0,
        max_retry_after_s: float = 300.0,
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
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self._key = _Secret(api_key)
        self._session = session or requests.Session()
        self._owns_session = session is None
        self._limiter = limiter or make_limiter(requests_per_minute)
        # initial * 2**(n-1) plus up to `initial` of jitter, capped.
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
        )
        self._sleep = sleep
        self._clock = clock
        self.stats = FetchStats()

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

    def reset_stats(self) -> FetchStats:
        """Return the counters so far and start new ones."""
        stats, self.stats = self.stats, FetchStats()
        return stats

    # -- public API ---------------------------------------------------------------------

    def informations(self) -> dict[str, Any]:
        """The `/informations` document: service state and the collections' update dates."""
        status, body = self._call("GET", "/informations", {})
        if status != 200 or not isinstance(body, dict):
            raise InseeApiError(
                f"INSEE /informations answered HTTP {status}", status=status, path="/informations"
            )
        return body

    def last_processed_at(self, informations: dict[str, Any] | None = None) -> datetime:
        """`dateDernierTraitementMaximum` of the establishments collection: everything INSEE
        processed up to that moment (Paris time) is available."""
        info = informations if informations is not None else self.informations()
        for entry in info.get("datesDernieresMisesAJourDesDonnees") or []:
            if _normalise(str(entry.get("collection", ""))) == ESTABLISHMENTS_COLLECTION:
                raw = entry.get("dateDernierTraitementMaximum")
                if raw:
                    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        raise InseeApiError(
            "INSEE /informations has no dateDernierTraitementMaximum for the establishments "
            "collection",
            path="/informations",
        )

    def last_processed_date(self, informations: dict[str, Any] | None = None) -> date:
        return self.last_processed_at(informations).date()

    def is_day_published(self, day: date, informations: dict[str, Any] | None = None) -> bool:
        """Whether `day` is complete at INSEE: processing has moved on to a later day."""
        return self.last_processed_date(informations) > day

    def iter_pages(
        self,
        q: str,
        *,
        champs: Sequence[str] | None = CHAMPS,
        page_size: int = PAGE_SIZE,
        date_param: str | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a `/siret` search, read with cursors. Pages are yielded as INSEE sent
        them (a SIRET can repeat; see `latest_per_siret`). A 404 means no result."""
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        params: dict[str, str] = {"q": q, "nombre": str(page_size)}
        if champs:
            params["champs"] = ",".join(champs)
        if date_param:
            params["date"] = date_param
        cursor = "*"
        seen: set[str] = set()
        total: int | None = None
        while True:
            status, body = self._call("SEARCH", "/siret", {**params, "curseur": cursor})
            if status == 404:
                if cursor != "*":
                    log.warning("INSEE answered 404 after the first page; taking it as the end")
                return
            header = body["header"]
            records = body.get("etablissements") or []
            if total is None:
                total = int(header.get("total") or 0)
            if records:
                self.stats.pages += 1
                self.stats.records += len(records)
                yield records
            next_cursor = header.get("curseurSuivant")
            if not next_cursor or next_cursor == cursor or not records:
                return
            seen.add(cursor)
            if next_cursor in seen:
                raise InseeApiError(
                    "INSEE sent a cursor that was already read; stopping to avoid a loop",
                    path="/siret",
                )
            if len(seen) > total // page_size + 5:
                raise InseeApiError(
                    f"INSEE kept paging beyond the {total} results announced", path="/siret"
                )
            cursor = next_cursor

    def iter_day(
        self, day: date, *, champs: Sequence[str] | None = CHAMPS, page_size: int = PAGE_SIZE
    ) -> Iterator[list[dict[str, Any]]]:
        """The pages of establishments whose `dateDernierTraitementEtablissement` is `day`."""
        return self.iter_pages(day_query(day), champs=champs, page_size=page_size)

    def fetch_day(self, day: date, **kwargs: Any) -> list[dict[str, Any]]:
        """All the records of `day`, as sent (not deduplicated)."""
        return [record for page in self.iter_day(day, **kwargs) for record in page]

    # -- HTTP ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        started = self._clock()
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
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
            raise InseeApiError(
                f"INSEE {path} still failing after {self.max_attempts} attempts: {last}",
                status=getattr(last, "status", None),
                path=path,
            ) from None
        finally:
            self.stats.duration_s += self._clock() - started

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        return self._backoff(retry_state)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "INSEE attempt %d failed (%s); retrying in %.1f s",
            retry_state.attempt_number,
            exc,
            wait,
        )

    def _attempt(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        self._limiter.try_acquire("insee")
        url = self.base_url + path
        headers = {API_KEY_HEADER: self._key.reveal(), "Accept": "application/json"}
        encoded = urlencode(params)
        self.stats.api_calls += 1
        try:
            if method == "SEARCH" and len(encoded) > MAX_GET_PARAMS_LENGTH:
                response = self._session.post(
                    url,
                    data=encoded,
                    headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                    timeout=self.timeout,
                )
            else:
                response = self._session.get(
                    url, params=params or None, headers=headers, timeout=self.timeout
                )
            raw = response.content
        except requests.Timeout as exc:
            raise _Retryable(f"timeout on {path} ({type(exc).__name__})") from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Retryable(f"truncated response from {path} ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            raise _Retryable(f"connection failure on {path} ({type(exc).__name__})") from None
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
            )
        if status in (401, 403):
            raise InseeApiError(
                f"INSEE refused the API key (HTTP {status} on {path}){_insee_message(raw)}",
                status=status,
                path=path,
            )
        if status != 200:
            raise InseeApiError(
                f"INSEE answered HTTP {status} on {path}{_insee_message(raw)}",
                status=status,
                path=path,
            )

        body = _json_or_none(raw)
        if not isinstance(body, dict):
            raise _Retryable(f"invalid or truncated JSON from {path} ({len(raw)} bytes)")
        if path == "/siret":
            header = body.get("header")
            records = body.get("etablissements")
            if not isinstance(header, dict) or not isinstance(records, list):
                raise _Retryable(f"malformed page from {path}: no header or etablissements")
            announced = header.get("nombre")
            if announced is not None and int(announced) != len(records):
                raise _Retryable(
                    f"incomplete page from {path}: {len(records)} records, {announced} announced"
                )
        return status, body


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

