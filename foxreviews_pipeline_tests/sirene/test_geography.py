"""Positions of establishments: SIRENE's Lambert coordinates in each territory's projection.

The oracles are published: positions published beside their projected coordinates (Base
Adresse Nationale addresses, Etalab's fixtures), and each projection's definition (EPSG
registry), whose natural origin is exact whatever the library. pyproj converting back and
forth is not used as one.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from foxreviews_pipeline.lib.asset_keys import ENTREPRISES
from foxreviews_pipeline.lib.directory.checks import (
    BLOCKING_CHECKS,
    SHARE_CHECKS,
    positions_outcome,
)
from foxreviews_pipeline.lib.directory.publication import DirectoryChange
from foxreviews_pipeline.lib.sirene import geography
from foxreviews_pipeline.lib.sirene.mapping import map_table, position_counts
from foxreviews_pipeline.sample.positions import commune_lambert
from foxreviews_pipeline_tests.sirene.row_mapping import row_as_dict, rows_table, table_rows

# (EPSG, x, y) at the natural origin ↔ (lat, lng), from each projection's parameters:
# Lambert-93: latitude of false origin 46°30'N, longitude 3°E, false easting 700 000 m,
# false northing 6 600 000 m. UTM: the central meridian at the equator is (500 000, 0) in a
# north zone and (500 000, 10 000 000) in a south zone; zones 20N → 63°W, 22N → 51°W,
# 21N → 57°W, 40S → 57°E, 38S → 45°E.
DEFINITION_POINTS = (
    (2154, 700_000.0, 6_600_000.0, 46.5, 3.0),  # metropolitan France, Corsica
    (5490, 500_000.0, 0.0, 0.0, -63.0),  # Guadeloupe, Martinique, St-Martin, St-Barthélemy
    (2972, 500_000.0, 0.0, 0.0, -51.0),  # Guyane
    (2975, 500_000.0, 10_000_000.0, 0.0, 57.0),  # La Réunion
    (4471, 500_000.0, 10_000_000.0, 0.0, 45.0),  # Mayotte
    (4467, 500_000.0, 0.0, 0.0, -57.0),  # Saint-Pierre-et-Miquelon
)
# 11 m in degrees of latitude (and of longitude at the equator, or less anywhere else).
TOLERANCE_DEG = 11 / 111_320


def _metres(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance on a 6 371 km sphere: ample at the 11 m scale."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


@pytest.mark.parametrize(("epsg", "x", "y", "lat", "lng"), DEFINITION_POINTS)
def test_each_projection_puts_its_origin_where_its_definition_says(epsg, x, y, lat, lng):
    got_lat, got_lng = geography.to_wgs84(epsg, np.array([x]), np.array([y]))
    assert _metres(got_lat[0], got_lng[0], lat, lng) < 11


# Published positions: each (x, y) in its territory's legal projection beside the WGS84
# position published with it, read as published. Addresses of the Base Adresse Nationale
# (its API answers and address files give x/y beside lon/lat), and, where no BAN answer was
# to be found (Guyane, Mayotte, Saint-Pierre-et-Miquelon, Saint-Martin, Saint-Barthélemy),
# the fixtures of Etalab's project-legal (computed by proj4js, another library than
# pyproj). The commune code chooses the projection, as in a SIRENE record.
PUBLISHED_POINTS = (
    # code commune, x, y, lat, lng — source
    ("75115", 649850.81, 6860034.75, 48.838411, 2.316754),  # Paris 15e, 10 pl. des Cinq Martyrs du Lycée Buffon (BAN)
    ("67482", 1049409.0, 6838286.4, 48.55045, 7.737072),  # Strasbourg, 11 rue du Verdon (BAL)
    ("35001", 363406.065895971, 6791854.24255302, 48.1401803364252, -1.52766874865078),  # Acigné (BAL)
    ("2B033", 1228557.67, 6199231.44, 42.698296, 9.449953),  # Bastia, rue Napoléon (BAN)
    ("97106", 630891.77, 1787333.09, 16.162802, -61.775699),  # Bouillante, Guadeloupe (BAN)
    ("97209", 708397.73, 1615430.45, 14.604142, -61.065388),  # Fort-de-France, 9 bd Chevalier Sainte-Marthe (BAN)
    ("97801", 491382.61, 1998509.81, 18.075223, -63.081436),  # Saint-Martin (project-legal)
    ("97701", 516012.15, 1978611.10, 17.895324, -62.848835),  # Saint-Barthélemy (project-legal)
    ("97302", 351541.87, 540162.02, 4.885560, -52.338867),  # Guyane, Cayenne (project-legal)
    ("97422", 349508.73, 7646629.44, -21.275868, 55.54941),  # Le Tampon, La Réunion (BAN)
    ("97419", 376908.32, 7661474.9, -21.143829, 55.814539),  # Sainte-Rose, La Réunion (BAN)
    ("97611", 521488.64, 8585837.37, -12.792185, 45.197995),  # Mayotte, Mamoudzou (project-legal)
    ("97501", 552154.77, 5191524.54, 46.875213, -56.315575),  # Miquelon-Langlade (project-legal)
)


@pytest.mark.parametrize(("code_commune", "x", "y", "lat", "lng"), PUBLISHED_POINTS)
def test_published_positions_in_every_territory_within_11_m(code_commune, x, y, lat, lng):
    got_lat, got_lng, epsg, reason = geography.position_of(str(x), str(y), code_commune, False)
    assert reason == "positioned"
    assert got_lat is not None and got_lng is not None
    assert _metres(got_lat, got_lng, lat, lng) < 11, (epsg, got_lat, got_lng)


def test_every_territory_has_its_projection():
    assert geography.epsg_of_commune("75056") == 2154
    assert geography.epsg_of_commune("2A004") == 2154
    assert geography.epsg_of_commune("2B033") == 2154
    for code, epsg in (
        ("97105", 5490), ("97209", 5490), ("97701", 5490), ("97801", 5490), ("97302", 2972),
        ("97411", 2975), ("97611", 4471), ("97502", 4467),
    ):
        assert geography.epsg_of_commune(code) == epsg, code
    # No projection known: the Pacific communities, abroad, nothing.
    assert geography.epsg_of_commune("98735") is None
    assert geography.epsg_of_commune(None) is None


# Points of each territory as SIRENE gives them (metres in the territory's projection),
# placed from the projection's definition: x = 500 000 + k0·N·Δλ·cos φ… is not needed, as
# each point sits on its zone's central meridian or near the origin, where the projected
# metres are distances along it. A commune of the territory places each.
def _on_meridian(lat_deg: float, north: bool) -> float:
    """Northing of a point of latitude `lat_deg` on a UTM zone's central meridian: k0 × the
    GRS 80 meridian arc (series to e⁶, sub-millimetre), plus 10 000 km in a south zone."""
    a, f, k0 = 6_378_137.0, 1 / 298.257222101, 0.9996
    e2 = f * (2 - f)
    phi = math.radians(lat_deg)
    arc = a * (
        (1 - e2 / 4 - 3 * e2**2 / 64 - 5 * e2**3 / 256) * phi
        - (3 * e2 / 8 + 3 * e2**2 / 32 + 45 * e2**3 / 1024) * math.sin(2 * phi)
        + (15 * e2**2 / 256 + 45 * e2**3 / 1024) * math.sin(4 * phi)
        - (35 * e2**3 / 3072) * math.sin(6 * phi)
    )
    return k0 * arc + (0 if north else 10_000_000.0)


def test_points_at_each_territory_latitude_on_its_zone_meridian():
    """On a UTM zone's central meridian, a point of known latitude has a northing given by
    the ellipsoid's meridian arc alone (computed here, independently of pyproj): one such
    point at the latitude of each overseas territory."""
    for epsg, lat, lng in (
        (5490, 16.2, -63.0), (5490, 14.6, -63.0), (2972, 4.5, -51.0), (2975, -21.1, 57.0),
        (4471, -12.8, 45.0), (4467, 46.9, -57.0),
    ):
        y = _on_meridian(lat, north=lat > 0)
        got_lat, got_lng = geography.to_wgs84(epsg, np.array([500_000.0]), np.array([y]))
        assert _metres(got_lat[0], got_lng[0], lat, lng) < 11, epsg


def _row(siret: str, commune: str, x: str | None, y: str | None, statut: str = "O") -> dict:
    return {
        "siret": siret, "siren": siret[:9], "statutDiffusionEtablissement": statut,
        "codeCommuneEtablissement": commune, "etatAdministratifEtablissement": "A",
        "denominationUniteLegale": "ACME", "dateDernierTraitementEtablissement": "2024-03-22T10:00:00",
        "coordonneeLambertAbscisseEtablissement": x, "coordonneeLambertOrdonneeEtablissement": y,
    }


def _map(rows: list[dict]) -> tuple[list[dict], dict]:
    from foxreviews_pipeline.lib.sirene.mapping import FLAT_FIELDS

    table = rows_table([tuple(r.get(f) for f in FLAT_FIELDS) for r in rows])
    mapped, rejections = map_table(table)
    assert rejections == []
    return [row_as_dict(r) for r in table_rows(mapped)], position_counts(mapped)


SIRETS = ("32816124500027", "55203253400646", "44306184100047", "73282932000074", "35600000000048")


def test_positions_in_every_territory_and_the_nulls_by_reason():
    points = commune_lambert(["75056", "97411", "97105", "97302", "97611", "97502", "97701"])
    x, y = points["75056"]
    re_x, re_y = points["97411"]
    rows = [
        _row(SIRETS[0], "75056", f"{x:.1f}", f"{y:.1f}"),
        # A Réunion position on a metropolitan address: read as Lambert-93, it is not Paris.
        _row(SIRETS[1], "75056", f"{re_x:.1f}", f"{re_y:.1f}"),
        _row(SIRETS[2], "75056", f"{x:.1f}", f"{y:.1f}", statut="N"),
        _row(SIRETS[3], "75056", "[ND]", "[ND]", statut="P"),
        _row(SIRETS[4], "75056", "", ""),
    ]
    mapped, counts = _map(rows)
    lat = [r["sirene_lat"] for r in mapped]
    assert lat[0] is not None and 48.7 < lat[0] < 49.0 and mapped[0]["sirene_epsg"] == 2154
    assert lat[1:] == [None] * 4
    assert [mapped[i]["sirene_epsg"] for i in range(1, 5)] == [None] * 4
    assert {k: v for k, v in counts.items() if k != "by_departement"} == {
        "positioned": 1, "outside_territory": 1, "not_diffusible": 1, "masked": 1,
        "no_coordinates": 1, "no_territory": 0,
    }
    assert counts["by_departement"] == {"75": [5, 1]}

    # Each overseas territory's sample point is converted in its own projection, and lands
    # in its territory.
    for code, epsg in (("97411", 2975), ("97105", 5490), ("97302", 2972), ("97611", 4471),
                       ("97502", 4467), ("97701", 5490)):
        px, py = points[code]
        lat_, lng_, epsg_, reason = geography.position_of(f"{px:.1f}", f"{py:.1f}", code, False)
        assert (epsg_, reason) == (epsg, geography.POSITIONED), code
        assert geography.in_extent(geography.departement_of(code) or "", lat_, lng_, margin=0)


def test_a_reunion_position_read_as_lambert_93_lands_in_the_north_atlantic():
    # The bug the bounding boxes catch: a Réunion address converted with Lambert-93.
    re_x, re_y = commune_lambert(["97411"])["97411"]
    lat, lng = geography.to_wgs84(2154, np.array([re_x]), np.array([re_y]))
    assert lat[0] > 50 and lng[0] < 0
    assert geography.position_of(f"{re_x}", f"{re_y}", "75056", False)[3] == (
        geography.OUTSIDE_TERRITORY
    )


def test_the_blocking_check_holds_a_batch_with_more_than_one_percent_outside():
    assert (ENTREPRISES, "positions_in_territory") in BLOCKING_CHECKS
    assert (ENTREPRISES, "positions_in_territory") in SHARE_CHECKS
    assert positions_outcome({"positioned": 990, "outside_territory": 10}).passed
    held = positions_outcome({"positioned": 980, "outside_territory": 20})
    assert not held.passed and held.metadata["offending"] == 20
    assert held.metadata["outside_share"] == 0.02
    assert positions_outcome({}).passed  # nothing converted: nothing to judge

    # A day whose positions were all read in the wrong projection.
    x, y = commune_lambert(["97411"])["97411"]
    rows = [_row(s, "75056", f"{x:.1f}", f"{y:.1f}") for s in SIRETS]
    _, counts = _map(rows)
    change = DirectoryChange()
    change.add_positions(counts)
    assert not positions_outcome(change.positions).passed
    figures = change.figures()[ENTREPRISES]
    assert figures["positioned_share"] == 0.0
    assert figures["positions"]["outside_territory"] == 5


def test_many_rows_are_converted_at_once():
    n = 200_000
    rng = np.random.default_rng(1)
    x = pa.array([f"{v:.1f}" for v in rng.uniform(640_000, 660_000, n)])
    y = pa.array([f"{v:.1f}" for v in rng.uniform(6_855_000, 6_870_000, n)])
    found = geography.positions(x, y, pa.array(["75056"] * n), np.zeros(n, bool))
    assert found.counts()["positioned"] == n


# Known towns (prefectures and the country's extreme communes, WGS84 to about 0.01°), each
# inside the extent of its own département without the margin: the hand-made extents hold
# the real territory, its islands and its corners included.
KNOWN_TOWNS = [
    ("75", 48.8566, 2.3522),    # Paris
    ("69", 45.7640, 4.8357),    # Lyon
    ("13", 43.2965, 5.3698),    # Marseille
    ("2A", 41.9192, 8.7386),    # Ajaccio
    ("2A", 41.3875, 9.1594),    # Bonifacio
    ("2B", 42.6977, 9.4508),    # Bastia
    ("2B", 43.0000, 9.3600),    # Cap Corse, Ersa
    ("29", 48.3904, -4.4861),   # Brest
    ("29", 48.4584, -5.0894),   # Ouessant
    ("29", 48.0389, -4.8497),   # Île de Sein
    ("67", 48.5734, 7.7521),    # Strasbourg
    ("67", 49.0370, 8.2260),    # Lauterbourg
    ("06", 43.7102, 7.2620),    # Nice
    ("06", 43.7747, 7.4975),    # Menton
    ("59", 50.6292, 3.0573),    # Lille
    ("59", 51.0344, 2.3768),    # Dunkerque
    ("62", 50.9513, 1.8587),    # Calais
    ("66", 42.6887, 2.8948),    # Perpignan
    ("66", 42.4800, 3.1300),    # Cerbère
    ("64", 43.4832, -1.5586),   # Biarritz
    ("64", 43.3580, -1.7750),   # Hendaye
    ("85", 46.7260, -2.3480),   # Île d'Yeu
    ("17", 46.2000, -1.4100),   # Île de Ré, Saint-Martin-de-Ré
    ("56", 47.3480, -3.1550),   # Belle-Île, Le Palais
    ("971", 15.9985, -61.7261), # Basse-Terre
    ("971", 16.2411, -61.5331), # Pointe-à-Pitre
    ("971", 15.8770, -61.2600), # Marie-Galante, Grand-Bourg
    ("972", 14.6161, -61.0588), # Fort-de-France
    ("973", 4.9372, -52.3260),  # Cayenne
    ("973", 5.5000, -54.0300),  # Saint-Laurent-du-Maroni
    ("974", -20.8789, 55.4481), # Saint-Denis
    ("974", -21.3393, 55.4781), # Saint-Pierre
    ("975", 46.7811, -56.1764), # Saint-Pierre (Saint-Pierre-et-Miquelon)
    ("975", 47.0975, -56.3814), # Miquelon
    ("976", -12.7806, 45.2278), # Mamoudzou
    ("977", 17.8962, -62.8498), # Gustavia
    ("978", 18.0679, -63.0822), # Marigot
]


@pytest.mark.parametrize(("departement", "lat", "lng"), KNOWN_TOWNS)
def test_every_known_town_lies_in_its_own_extent(departement, lat, lng):
    assert geography.in_extent(departement, lat, lng, margin=0.0)
