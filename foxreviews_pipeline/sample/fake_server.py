"""A local stand-in for INSEE's API Sirene 3.11: `/siret` (GET and POST form) and `/informations`.

It speaks INSEE's formats (header {statut, message, total, debut, nombre, curseur,
curseurSuivant} + etablissements[], 404 with INSEE's header when nothing matches, opaque
cursors whose last page repeats the cursor with nombre 0), requires the key header, and can
misbehave on purpose: scripted faults per request number and a sliding-window quota. It is
what the tests run the real client against, and what the `sample` source serves.

    with FakeInseeServer(records, api_key="k") as server:
        client = InseeClient(server.base_url, "k")
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.sirene.client import API_KEY_HEADER
from foxreviews_pipeline.lib.sirene.fields import KNOWN_FIELDS, NESTED_OBJECTS

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000
_CURSOR_PREFIX = b"\x02\x81."
_DATE_FIELD = "dateDernierTraitementEtablissement"
_TERM = re.compile(r"^(-?)([A-Za-z0-9]+):(.+)$")
_RANGE = re.compile(r"^\[(\S+) TO (\S+)\]$")


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to the request whose number it is scripted for."""

    kind: str  # "status" | "delay" | "truncated" | "invalid_json" | "trickle" | "header"
    #            | "repeat_cursor" | "drop" | "duplicate"
    status: int = 200
    retry_after: str | None = None
    seconds: float = 0.0
    message: str | None = None
    header: tuple[tuple[str, Any], ...] = ()  # fields to set (a value of DROP removes it)
    count: int = 0
    max_bytes: int = 0

    @classmethod
    def http(
        cls, status: int, *, retry_after: float | str | None = None, message: str | None = None
    ) -> Fault:
        return cls("status", status=status, message=message,
                   retry_after=None if retry_after is None else str(retry_after))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, but only after `seconds` (longer than the client's timeout)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def truncated(cls) -> Fault:
        """Announce the full Content-Length, send half the body, close the connection."""
        return cls("truncated")

    @classmethod
    def invalid_json(cls) -> Fault:
        """A 200 whose (complete, correctly sized) body is not valid JSON."""
        return cls("invalid_json")

    @classmethod
    def trickle(cls, seconds_per_byte: float, *, max_bytes: int = 200) -> Fault:
        """Send the headers, then the body one byte every `seconds_per_byte` (a per-read
        timeout never fires); after `max_bytes`, close the connection."""
        return cls("trickle", seconds=seconds_per_byte, max_bytes=max_bytes)

    @classmethod
    def with_header(cls, **fields: Any) -> Fault:
        """A /siret page whose header has these fields set (`DROP` removes one)."""
        return cls("header", header=tuple(fields.items()))

    @classmethod
    def repeat_cursor(cls) -> Fault:
        """An empty /siret page that repeats the cursor it was sent (INSEE's end, too early)."""
        return cls("repeat_cursor")

    @classmethod
    def drop(cls, count: int) -> Fault:
        """A /siret page missing its last `count` records (nombre says so; total does not)."""
        return cls("drop", count=count)

    @classmethod
    def duplicate(cls, count: int) -> Fault:
        """A /siret page that also repeats its first `count` records (INSEE's duplicates)."""
        return cls("duplicate", count=count)


DROP = object()


@dataclass(frozen=True)
class LoggedRequest:
    number: int
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    params: dict[str, str]
    status: int
    fault: str | None = None
    # Body bytes actually written (for a trickle: how far it got before the client left).
    sent_bytes: int | None = None


class _BadRequest(Exception):
    pass


def encode_cursor(key: str) -> str:
    return base64.b64encode(_CURSOR_PREFIX + key.encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor, validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequest(f"Curseur invalide : {cursor}") from None
    if not raw.startswith(_CURSOR_PREFIX):
        raise _BadRequest(f"Curseur invalide : {cursor}")
    return raw[len(_CURSOR_PREFIX):].decode()


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"header": {"statut": status, "message": message}}


def _date_bounds(value: str) -> tuple[str, str]:
    """Inclusive ISO-prefix bounds for `2024`, `2024-03`, `2024-03-26`, `*` or a range."""
    m = _RANGE.match(value)
    if m:
        low, high = m.group(1), m.group(2)
        return ("" if low == "*" else low), ("\uffff" if high == "*" else high + "\uffff")
    return value, value + "\uffff"


class _Store:
    """Records by day (sorted by SIRET), from a fixed list and/or a day generator."""

    def __init__(
        self,
        records: Iterable[dict[str, Any]],
        day_source: Callable[[date], Sequence[dict[str, Any]]] | None,
        cache_days: int,
    ):
        self._lock = threading.Lock()
        self._static: dict[str, list[dict[str, Any]]] = {}
        self._day_source = day_source
        self._cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._cache_days = cache_days
        self.add(records)

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for record in records:
                day = str(record.get(_DATE_FIELD) or "")[:10]
                self._static.setdefault(day, []).append(record)
            self._cache.clear()

    def day(self, day: str) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._cache.get(day)
            if cached is not None:
                self._cache.move_to_end(day)
                return cached
        rows = list(self._static.get(day, ()))
        if self._day_source is not None:
            with contextlib.suppress(ValueError):
                rows.extend(self._day_source(date.fromisoformat(day)))
        rows.sort(key=lambda r: r["siret"])
        with self._lock:
            self._cache[day] = rows
            while len(self._cache) > self._cache_days:
                self._cache.popitem(last=False)
        return rows

    def days_between(self, low: str, high: str) -> list[str]:
        """The days a date range covers: every stored day, plus generated ones (≤ 31)."""
        days = {d for d in self._static if low <= d <= high}
        if self._day_source is not None and len(low) >= 10 and high[:10] != "\uffff":
            start, end = date.fromisoformat(low[:10]), date.fromisoformat(high[:10])
            if (end - start).days > 31:
                raise _BadRequest("Plage de dates trop grande pour ce serveur de test")
            days.update((start + timedelta(n)).isoformat() for n in range((end - start).days + 1))
        return sorted(days)

    def all_known(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = [r for day in self._static.values() for r in day]
            rows += [r for day in self._cache.values() for r in day]
        return rows


class FakeInseeServer:
    """A threaded HTTP server on 127.0.0.1 that answers like INSEE's API Sirene 3.11."""

    def __init__(
        self,
        records: Iterable[dict[str, Any]] = (),
        *,
        day_source: Callable[[date], Sequence[dict[str, Any]]] | None = None,
        api_key: str = "fake-insee-key",
        faults: Mapping[int, Fault] | None = None,
        quota: int | None = None,
        quota_window_s: float = 60.0,
        last_processed_at: datetime | None = None,
        made_available_at: datetime | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_days: int = 2,
    ):
        self.api_key = api_key
        self.quota = quota
        self.quota_window_s = quota_window_s
        self.last_processed_at = last_processed_at
        # When unset, data is made available 40 minutes after its last processing.
        self.made_available_at = made_available_at
        self.service_state = "UP"
        # Per collection name ("Établissements", ...); missing ones are "UP".
        self.collection_states: dict[str, str] = {}
        # Served as /informations instead of the computed document (malformed shapes).
        self.informations_document: dict[str, Any] | None = None
        self._store = _Store(records, day_source, cache_days)
        self._lock = threading.Lock()
        self._faults: dict[int, Fault] = dict(faults or {})
        self._count = 0
        # Bounded so that a long-running demo server does not grow without limit.
        self._log: deque[LoggedRequest] = deque(maxlen=100_000)
        self._admitted: deque[float] = deque()
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeInseeServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"fake": self})
        httpd = _QuietServer((self._host, self._port), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="fake-insee", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FakeInseeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://{self._host}:{self._httpd.server_port}"

    def __repr__(self) -> str:
        where = self.base_url if self._httpd is not None else "stopped"
        return f"FakeInseeServer({where})"

    # -- test controls -------------------------------------------------------------------

    def add_records(self, records: Iterable[dict[str, Any]]) -> None:
        self._store.add(records)

    def set_faults(self, faults: Mapping[int, Fault]) -> None:
        """Script faults by request number (1 = the next request after `reset()`)."""
        with self._lock:
            self._faults = dict(faults)

    def reset(self) -> None:
        """Forget the request log, the request count and the quota window."""
        with self._lock:
            self._count = 0
            self._log.clear()
            self._admitted.clear()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return sorted(self._log, key=lambda r: r.at)

    def max_requests_in_window(self, window_s: float, path: str | None = None) -> int:
        """The most requests that arrived within any `window_s` seconds."""
        times = [r.at for r in self.requests if path is None or r.path == path]
        best, start = 0, 0
        for end in range(len(times)):
            while times[end] - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- request handling (called from handler threads) ----------------------------------

    def _next_number(self) -> tuple[int, Fault | None]:
        with self._lock:
            self._count += 1
            return self._count, self._faults.get(self._count)

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _over_quota(self, now: float) -> bool:
        if self.quota is None:
            return False
        with self._lock:
            while self._admitted and now - self._admitted[0] >= self.quota_window_s:
                self._admitted.popleft()
            if len(self._admitted) >= self.quota:
                return True
            self._admitted.append(now)
            return False

    def informations(self) -> dict[str, Any]:
        if self.informations_document is not None:
            return self.informations_document
        processed = self.last_processed_at or datetime.now(PARIS).replace(
            hour=6, minute=30, second=0, microsecond=0, tzinfo=None
        )
        stamp = _insee_time(processed)
        available = _insee_time(self.made_available_at or processed + timedelta(minutes=40))
        collections = ("Unités Légales", "Établissements", "Liens de succession")
        return {
            "header": {"statut": 200, "message": "OK"},
            "etatService": self.service_state,
            "etatsDesServices": [
                {"Collection": c, "etatCollection": self.collection_states.get(c, "UP")}
                for c in collections
            ],
            "versionService": "3.11.25",
            "journalDesModifications": "https://portail-api.insee.fr/",
            "datesDernieresMisesAJourDesDonnees": [
                {
                    "collection": c,
                    "dateDerniereMiseADisposition": available,
                    "dateDernierTraitementMaximum": stamp,
                    "dateDernierTraitementDeMasse": stamp,
                }
                for c in collections
            ],
        }

    def search(self, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        q = params.get("q")
        if not q:
            raise _BadRequest("Le paramètre q est obligatoire")
        cursor = params.get("curseur")
        if cursor is not None and params.get("tri"):
            raise _BadRequest("Le paramètre tri ne peut pas être utilisé avec le paramètre curseur")
        try:
            nombre = int(params.get("nombre", DEFAULT_PAGE_SIZE))
            debut = int(params.get("debut", 0))
        except ValueError:
            raise _BadRequest("Les paramètres nombre et debut doivent être des entiers") from None
        if not 0 <= nombre <= MAX_PAGE_SIZE:
            raise _BadRequest(f"Le paramètre nombre doit être compris entre 0 et {MAX_PAGE_SIZE}")
        champs = [c for c in (params.get("champs") or "").split(",") if c]
        unknown = [c for c in champs if c not in KNOWN_FIELDS]
        if unknown:
            raise _BadRequest(f"Champ(s) inconnu(s) : {', '.join(unknown)}")

        matches = self._evaluate(q)
        total = len(matches)
        if total == 0:
            return 404, _error_body(404, f"Aucun élément trouvé pour q={q}")

        header: dict[str, Any] = {"statut": 200, "message": "OK", "total": total, "debut": debut}
        if cursor is not None:
            start = 0
            if cursor != "*":
                after = decode_cursor(cursor)
                start = _bisect_after(matches, after)
            page = matches[start:start + nombre]
            next_cursor = encode_cursor(page[-1]["siret"]) if page else cursor
            header.update(nombre=len(page), curseur=cursor, curseurSuivant=next_cursor)
        else:
            page = matches[debut:debut + nombre]
            header["nombre"] = len(page)
        if champs:
            page = [_select(record, set(champs)) for record in page]
        return 200, {"header": header, "etablissements": page}

    def _evaluate(self, q: str) -> list[dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for alternative in q.split(" OR "):
            current: dict[str, dict[str, Any]] | None = None
            for term in alternative.split(" AND "):
                found = self._term(term.strip().strip("()"))
                if current is not None:
                    found = {k: v for k, v in current.items() if k in found}
                current = found
            result.update(current or {})
        return sorted(result.values(), key=lambda r: r["siret"])

    def _term(self, term: str) -> dict[str, dict[str, Any]]:
        m = _TERM.match(term)
        if not m or m.group(1):
            raise _BadRequest(f"Erreur de syntaxe dans la requête : {term}")
        name, value = m.group(2), m.group(3).strip('"')
        if name == _DATE_FIELD:
            low, high = _date_bounds(value)
            out: dict[str, dict[str, Any]] = {}
            for day in self._store.days_between(low[:10], high[:10] if high != "\uffff" else high):
                for record in self._store.day(day):
                    stamp = record.get(_DATE_FIELD) or ""
                    if low <= stamp <= high:
                        out[record["siret"]] = record
            return out
        if name in ("siret", "siren"):
            return {r["siret"]: r for r in self._store.all_known() if r.get(name) == value}
        raise _BadRequest(f"Variable non prise en charge par ce serveur de test : {name}")


def _insee_time(moment: datetime) -> str:
    """INSEE's local-time format: milliseconds, no offset."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _misbehave(fault: Fault, params: Mapping[str, str], body: dict[str, Any]) -> None:
    """Apply a scripted /siret page fault to an answer INSEE would have sent."""
    header, page = body["header"], body["etablissements"]
    if fault.kind == "header":
        for name, value in fault.header:
            if value is DROP:
                header.pop(name, None)
            else:
                header[name] = value
    elif fault.kind == "repeat_cursor":
        page.clear()
        header.update(nombre=0, curseurSuivant=params.get("curseur", "*"))
    elif fault.kind == "drop":
        del page[max(0, len(page) - fault.count):]
        header["nombre"] = len(page)
    elif fault.kind == "duplicate":
        page.extend(page[: fault.count])
        header["nombre"] = len(page)


def _bisect_after(rows: list[dict[str, Any]], key: str) -> int:
    lo, hi = 0, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid]["siret"] <= key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _select(record: dict[str, Any], champs: set[str]) -> dict[str, Any]:
    """What INSEE's `champs` leaves of a record: requested variables, nesting kept."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in NESTED_OBJECTS:
            if isinstance(value, dict):
                kept = {k: v for k, v in value.items() if k in champs}
                if kept:
                    out[key] = kept
        elif key == "periodesEtablissement":
            periods = [{k: v for k, v in p.items() if k in champs} for p in value or ()]
            if any(periods):
                out[key] = periods
        elif key in champs:
            out[key] = value
    return out


class _QuietServer(ThreadingHTTPServer):
    """Clients that give up (timeouts, truncated reads) reset connections: not an error here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            log.debug("fake INSEE server: error while serving a request", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeInseeServer
    protocol_version = "HTTP/1.1"
    server_version = "FakeInsee/3.11"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._handle("GET", "")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        self._handle("POST", body)

    def _handle(self, method: str, form: str) -> None:
        arrived = time.monotonic()
        number, fault = self.fake._next_number()
        split = urlsplit(self.path)
        query = form if method == "POST" else split.query
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        path = "/" + split.path.rstrip("/").rsplit("/", 1)[-1]
        status, payload, extra_headers = self._answer(path, params, fault, arrived)
        if fault and fault.kind in _PAGE_FAULTS and path == "/siret" and status == 200:
            _misbehave(fault, params, payload)

        body = json.dumps(payload, ensure_ascii=False).encode()
        fault_kind = fault.kind if fault else None
        if fault and fault.kind == "invalid_json":
            body = body[: max(1, len(body) // 2)]
        if fault and fault.kind == "trickle":
            self._trickle(LoggedRequest(number, arrived, method, path, params, status, fault_kind),
                          body, fault)
            return
        self.fake._record(LoggedRequest(number, arrived, method, path, params, status, fault_kind))
        if fault and fault.kind == "delay":
            time.sleep(fault.seconds)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra_headers.items():
                self.send_header(name, value)
            if fault and fault.kind == "truncated":
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _trickle(self, entry: LoggedRequest, body: bytes, fault: Fault) -> None:
        sent = 0
        try:
            self.send_response(entry.status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            for byte in body[: fault.max_bytes]:
                time.sleep(fault.seconds)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.close_connection = True
            self.fake._record(dataclasses.replace(entry, sent_bytes=sent))

    def _answer(
        self, path: str, params: dict[str, str], fault: Fault | None, arrived: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if fault and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "Erreur")
            return fault.status, _error_body(fault.status, message), headers
        if self.headers.get(API_KEY_HEADER) != self.fake.api_key:
            return 401, _error_body(401, "Jeton d'accès manquant ou invalide"), {}
        if self.fake._over_quota(arrived):
            message = (
                f"Rate limit exceeded ! You reach the limit of {self.fake.quota} requests "
                f"per {self.fake.quota_window_s:g} seconds"
            )
            return 429, {"message": message, "http_status_code": 429}, {}
        try:
            if path == "/informations":
                return 200, self.fake.informations(), {}
            if path == "/siret":
                status, body = self.fake.search(params)
                return status, body, {}
        except _BadRequest as exc:
            return 400, _error_body(400, str(exc)), {}
        return 404, _error_body(404, f"Ressource inconnue : {path}"), {}


_PAGE_FAULTS = frozenset({"header", "repeat_cursor", "drop", "duplicate"})

_DEFAULT_MESSAGES = {
    400: "Nombre incorrect de paramètres ou les paramètres sont mal formatés",
    429: "Quota d'interrogations de l'API dépassé",
    500: "Erreur interne du serveur",
    502: "Bad Gateway",
    503: "Service indisponible",
    504: "Gateway Timeout",
}

