"""A local stand-in for geo.api.gouv.fr answering in its JSON format."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

REGIONS = [
    {"nom": "Guadeloupe", "code": "01"},
    {"nom": "La Réunion", "code": "04"},
    {"nom": "Île-de-France", "code": "11"},
    {"nom": "Auvergne-Rhône-Alpes", "code": "84"},
    {"nom": "Corse", "code": "94"},
]

# As `GET /communes?fields=nom,code,codesPostaux,centre,population,codeDepartement,codeRegion` answers.
COMMUNES = [
    {"nom": "L'Abergement-Clémenciat", "code": "01001", "codesPostaux": ["01400"],
     "centre": {"type": "Point", "coordinates": [4.9306, 46.1517]}, "population": 859,
     "codeDepartement": "01", "codeRegion": "84"},
    {"nom": "Ajaccio", "code": "2A004", "codesPostaux": ["20090", "20000", "20167"],
     "centre": {"type": "Point", "coordinates": [8.7376, 41.9347]}, "population": 76320,
     "codeDepartement": "2A", "codeRegion": "94"},
    {"nom": "Paris", "code": "75056",
     "codesPostaux": ["75001", "75002", "75003", "75004", "75005", "75006", "75007", "75008", "75009", "75010",
                      "75011", "75012", "75013", "75014", "75015", "75016", "75116", "75017", "75018", "75019", "75020"],
     "centre": {"type": "Point", "coordinates": [2.347, 48.8589]}, "population": 2103778,
     "codeDepartement": "75", "codeRegion": "11"},
    {"nom": "Saint-Denis", "code": "97411", "codesPostaux": ["97400", "97417", "97490"],
     "centre": {"type": "Point", "coordinates": [55.4451, -20.8823]}, "population": 155634,
     "codeDepartement": "974", "codeRegion": "04"},
    # Overseas collectivités come without a region.
    {"nom": "Saint-Pierre", "code": "97502", "codesPostaux": ["97500"],
     "centre": {"type": "Point", "coordinates": [-56.1773, 46.7811]}, "population": 5194,
     "codeDepartement": "975"},
]


class GeoApiServer:
    """`with GeoApiServer(communes) as server:` — serves /regions and /communes on 127.0.0.1."""

    def __init__(self, communes: list[dict] | None = None, regions: list[dict] | None = None, status: int = 200):
        self.communes = COMMUNES if communes is None else communes
        self.regions = REGIONS if regions is None else regions
        self.status = status
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                outer.requests.append((url.path, parse_qs(url.query)))
                payload = {"/communes": outer.communes, "/regions": outer.regions}.get(url.path)
                if outer.status != 200 or payload is None:
                    status = outer.status if outer.status != 200 else 404
                    body = json.dumps({"code": status, "message": "Not found"}).encode()
                else:
                    status, body = 200, json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
