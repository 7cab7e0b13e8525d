"""Faults that must end a day cleanly, at once and with the right reason: a stock file
without its legal units, of another extract, with the wrong columns or cut short, and a day
whose records name nobody."""

from __future__ import annotations

import copy
import zipfile
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.sirene.landing import write_partition
from foxreviews_pipeline.sample.stock_files import write_sample_stock

from .test_daily_pipeline import CHAIN, DAY1, DAY2, pipeline, table_state

__all__ = ["pipeline"]  # the fixture, re-used

# The sample stock's rows were last processed in March 2024.
STOCK_DAY = date(2024, 3, 12)


def _land_from_stock(path: Path, tmp_path: Path) -> dg.Failure:
    source = SireneSource(source="stock", stock_path=str(path))
    with pytest.raises(dg.Failure) as caught:
        source.land_day(STOCK_DAY, tmp_path / "landing")
    return caught.value


def _one_line(failure: dg.Failure) -> str:
    message = str(failure.description)
    assert len(message.splitlines()) == 1, message
    # A file does not mend itself: the step is not retried.
    assert failure.allow_retries is False
    return message


def test_a_stock_day_without_its_legal_units_fails_naming_the_file_to_supply(tmp_path):
    stock = tmp_path / "stock" / "StockEtablissement_utf8.csv"
    stock.parent.mkdir()
    write_sample_stock(stock, 2000, seed=3)
    message = _one_line(_land_from_stock(stock, tmp_path))
    assert "no StockUniteLegale file beside" in message and "StockUniteLegale_utf8.zip" in message
    assert str(stock.parent) in message
    assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").rglob("*.json*"))


def test_a_stock_day_with_legal_units_of_another_extract_fails_naming_them(tmp_path):
    folder = tmp_path / "stock"
    folder.mkdir()
    stock = folder / "StockEtablissement_utf8.csv"
    write_sample_stock(stock, 2000, seed=3)
    # The legal units of another extract, where the platform looks for them.
    write_sample_stock(
        tmp_path / "other.csv", 500, seed=99, unites_legales_path=folder / "StockUniteLegale_utf8.csv"
    )
    message = _one_line(_land_from_stock(stock, tmp_path))
    assert "StockUniteLegale_utf8.csv" in message and "have no legal unit in it" in message
    assert "same extract" in message


def test_a_stock_file_with_the_wrong_columns_names_them(tmp_path):
    folder = tmp_path / "stock"
    folder.mkdir()
    stock = folder / "StockEtablissement_utf8.csv"
    write_sample_stock(stock, 50, seed=3, unites_legales_path=folder / "StockUniteLegale_utf8.csv")
    lines = stock.read_text(encoding="utf-8").splitlines()
    header = lines[0].replace("siret,", "numero,").replace("codeCommuneEtablissement", "commune")
    stock.write_text("\n".join([header, *lines[1:]]) + "\n", encoding="utf-8")
    message = _one_line(_land_from_stock(stock, tmp_path))
    assert "not a StockEtablissement file" in message
    assert "siret" in message and "codeCommuneEtablissement" in message


@pytest.mark.parametrize("suffix", [".csv", ".zip"])
def test_a_truncated_stock_file_fails_at_once(tmp_path, suffix):
    folder = tmp_path / "stock"
    folder.mkdir()
    stock = folder / f"StockEtablissement_utf8{suffix}"
    write_sample_stock(stock, 3000, seed=3, unites_legales_path=folder / "StockUniteLegale_utf8.csv")
    data = stock.read_bytes()
    stock.write_bytes(data[: len(data) // 2 + 17])  # cut inside a row
    if suffix == ".zip":
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(stock)
    message = _one_line(_land_from_stock(stock, tmp_path))
    assert str(stock) in message
    assert "truncated" in message or "cannot be read" in message


def test_a_day_that_names_nobody_is_held_back(pipeline):
    pipeline.run(CHAIN, DAY1)
    before = table_state(pipeline.url)
    pipeline.run(CHAIN[:1], DAY2)
    nameless = []
    for record in pipeline.records(DAY2).values():
        record = copy.deepcopy(record)
        record["uniteLegale"] = dict.fromkeys(record["uniteLegale"])
        nameless.append(record)
    write_partition(pipeline.landing, date.fromisoformat(DAY2), nameless, {"source": "test"})
    result, found = pipeline.run([directory_day], DAY2, raise_on_error=False)
    assert not result.success and found == {}
    failed = {e.check_name: e.metadata for e in result.get_asset_check_evaluations() if not e.passed}
    assert "records_usable" in failed
    assert failed["records_usable"]["offending"].value > 1500
    assert table_state(pipeline.url) == before
