"""geo.api.gouv.fr, the live source of communes (with coordinates) when the machine is online.

`GET {base}/communes?fields=nom,code,codesPostaux,centre,population,codeDepartement,codeRegion&zone=metro,drom,com`
answers a JSON list of
`{"nom", "code", "codesPostaux": [...], "centre": {"type": "Point", "coordinates": [lng, lat]},
"population", "codeDepartement", "codeRegion"}`; `GET {base}/regions` gives the region
names. Communes of overseas collectivités have no region: they take the one the offline
snapshot gives them (the collectivité's own name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from foxreviews_pipeline.lib.reference.communes import Commune

DEFAULT_BASE_URL = "https://geo.api.gouv.fr"
COMMUNE_FIELDS = "nom,code,codesPostaux,centre,population,codeDepartement,codeRegion"
ZONES = "metro,drom,com"


class GeoApiError(RuntimeError):
    pass


@dataclass
class GeoApiResult:
    communes: list[Commune]
    skipped: dict[str, int] = field(default_factory=dict)


def _session() -> requests.Session:
    session = requests.Session()
    retry = Retry(total=4, backoff_factor=1.0, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET",), respect_retry_after_header=True)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.headers["Accept"] = "application/json"
    return session


def _get(
    session: requests.Session, url: str, params: Mapping[str, str], timeout: float
) -> list[Any]:
    response = session.get(url, params=params, timeout=timeout)
    if response.status_code != 200:
        raise GeoApiError(f"GET {response.url} answered {response.status_code}")
    payload = response.json()
    if not isinstance(payload, list):
        raise GeoApiError(f"GET {response.url}: expected a JSON list")
    return payload


def parse_commune(item: Mapping[str, Any], region_names: Mapping[str, str],
                  fallback_regions: Mapping[str, str]) -> Commune | str:
    """A Commune, or the reason the item cannot be one."""
    code, nom, departement = item.get("code"), item.get("nom"), item.get("codeDepartement")
    if not code or not nom:
        return "no code or name"
    if not departement:
        return "no département"
    region = region_names.get(item.get("codeRegion") or "") or fallback_regions.get(code)
    if not region:
        return "no région"
    lat = lng = None
    centre = item.get("centre") or {}
    coordinates = centre.get("coordinates") if centre.get("type") == "Point" else None
    if coordinates and len(coordinates) == 2:
        lng, lat = float(coordinates[0]), float(coordinates[1])
    population = item.get("population")
    return Commune(
        code_insee=code,
        nom=nom,
        codes_postaux=tuple(sorted(set(item.get("codesPostaux") or ()))),
        departement=departement,
        region=region,
        population=int(population) if population is not None else None,
        lat=lat,
        lng=lng,
    )


def fetch_communes(
    base_url: str = DEFAULT_BASE_URL,
    *,
    fallback_regions: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    session: requests.Session | None = None,
) -> GeoApiResult:
    """Every current commune from the API, as `Commune` records with lat/lng.

    `fallback_regions`: INSEE code → region name for communes the API gives no region
    (overseas collectivités), usually from the shipped snapshot."""
    base = base_url.rstrip("/")
    owned = session is None
    session = session or _session()
    try:
        regions = _get(session, f"{base}/regions", {"fields": "nom,code"}, timeout)
        items = _get(session, f"{base}/communes",
                     {"fields": COMMUNE_FIELDS, "zone": ZONES, "format": "json"}, timeout)
    finally:
        if owned:
            session.close()
    region_names = {r["code"]: r["nom"] for r in regions if r.get("code") and r.get("nom")}
    result = GeoApiResult([])
    seen: set[str] = set()
    for item in items:
        parsed = parse_commune(item, region_names, fallback_regions or {})
        if isinstance(parsed, str):
            result.skipped[parsed] = result.skipped.get(parsed, 0) + 1
        elif parsed.code_insee in seen:
            result.skipped["duplicate code"] = result.skipped.get("duplicate code", 0) + 1
        else:
            seen.add(parsed.code_insee)
            result.communes.append(parsed)
    if not result.communes:
        raise GeoApiError(f"{base}/communes returned no usable commune")
    result.communes.sort(key=lambda c: c.code_insee)
    return result
