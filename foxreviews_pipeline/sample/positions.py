"""Where the sample's communes are: a point per commune, as SIRENE's Lambert coordinates.

The shipped communes carry no positions, so each commune gets a fixed point inside the
central part of its département's extent (`geography.DEPARTEMENT_EXTENTS`), drawn from its
code, and the point is projected into its territory's projection (Lambert-93 in
metropolitan France, UTM in the overseas departments and collectivities) as INSEE gives
them. Sample data only: the pipeline converts the other way.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from foxreviews_pipeline.lib.sirene.geography import (
    DEPARTEMENT_EXTENTS,
    departement_of,
    epsg_of_departement,
    to_projected,
)

# The share of the extent's width and height a commune's point is drawn in, centred.
_INNER = 0.6


def commune_point(code: str) -> tuple[float, float] | None:
    """(lat, lng) of a commune of the sample, or None outside the territories with a known
    projection (the Pacific communities)."""
    departement = departement_of(code)
    if departement is None or departement not in DEPARTEMENT_EXTENTS:
        return None
    west, south, east, north = DEPARTEMENT_EXTENTS[departement]
    digest = zlib.crc32(code.encode())
    fx, fy = (digest & 0xFFFF) / 0xFFFF, (digest >> 16) / 0xFFFF
    margin = (1 - _INNER) / 2
    lng = west + (east - west) * (margin + _INNER * fx)
    lat = south + (north - south) * (margin + _INNER * fy)
    return lat, lng


def commune_lambert(codes: Sequence[str]) -> dict[str, tuple[float, float]]:
    """code → (x, y) in metres, in the projection SIRENE uses for the commune's territory."""
    by_epsg: dict[int, list[tuple[str, float, float]]] = {}
    for code in dict.fromkeys(codes):
        point = commune_point(code)
        epsg = epsg_of_departement(departement_of(code))
        if point is None or epsg is None:
            continue
        by_epsg.setdefault(epsg, []).append((code, *point))
    found: dict[str, tuple[float, float]] = {}
    for epsg, points in by_epsg.items():
        lat = np.array([p[1] for p in points])
        lng = np.array([p[2] for p in points])
        x, y = to_projected(epsg, lat, lng)
        for (code, _, _), px, py in zip(points, x.tolist(), y.tolist(), strict=True):
            found[code] = (px, py)
    return found
