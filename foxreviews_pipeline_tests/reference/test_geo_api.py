"""geo.api.gouv.fr client against a local server speaking its format."""

import pytest

from foxreviews_pipeline.lib.reference.geo_api import COMMUNE_FIELDS, GeoApiError, fetch_communes
from foxreviews_pipeline_tests.reference.geo_server import GeoApiServer


def test_fetch_communes_parses_the_api_format():
    with GeoApiServer() as server:
        result = fetch_communes(server.base_url, fallback_regions={"97502": "Saint-Pierre-et-Miquelon"})
    by_code = {c.code_insee: c for c in result.communes}
    assert list(by_code) == ["01001", "2A004", "75056", "97411", "97502"]
    ajaccio = by_code["2A004"]
    # GeoJSON order is [longitude, latitude].
    assert (ajaccio.lat, ajaccio.lng) == (41.9347, 8.7376)
    assert (ajaccio.departement, ajaccio.region) == ("2A", "Corse")
    assert ajaccio.codes_postaux == ("20000", "20090", "20167") and ajaccio.code_postal_principal == "20000"
    assert (by_code["97411"].departement, by_code["97411"].region) == ("974", "La Réunion")
    assert by_code["97502"].region == "Saint-Pierre-et-Miquelon"
    assert by_code["75056"].population == 2103778
    assert result.skipped == {}
    paths = dict(server.requests)
    assert paths["/communes"]["fields"] == [COMMUNE_FIELDS]
    assert paths["/communes"]["zone"] == ["metro,drom,com"]


def test_communes_without_region_or_departement_are_skipped_and_counted():
    communes = [
        {"nom": "Saint-Pierre", "code": "97502", "codesPostaux": ["97500"], "codeDepartement": "975"},
        {"nom": "Sans département", "code": "01002", "codesPostaux": ["01640"], "codeRegion": "84"},
        {"nom": "Ajaccio", "code": "2A004", "codesPostaux": ["20000"], "codeDepartement": "2A", "codeRegion": "94"},
    ]
    with GeoApiServer(communes) as server:
        result = fetch_communes(server.base_url)
    assert [c.code_insee for c in result.communes] == ["2A004"]
    assert result.communes[0].lat is None  # no `centre` asked for: coordinates stay empty
    assert result.skipped == {"no région": 1, "no département": 1}


def test_an_error_status_raises():
    with GeoApiServer(status=404) as server, pytest.raises(GeoApiError, match="404"):
        fetch_communes(server.base_url)


def test_an_empty_answer_raises():
    with GeoApiServer(communes=[]) as server, pytest.raises(GeoApiError, match="no usable commune"):
        fetch_communes(server.base_url)
