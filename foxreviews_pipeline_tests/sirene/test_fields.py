"""Every list of SIRENE variables is derived from one definition of the API's record."""

from __future__ import annotations

import pytest

from foxreviews_pipeline.lib.sirene import fields
from foxreviews_pipeline.lib.sirene.client import CHAMPS
from foxreviews_pipeline.lib.sirene.mapping import FLAT_FIELDS
from foxreviews_pipeline.lib.sirene.stock_file import (
    STOCK_ETABLISSEMENT_COLUMNS,
    STOCK_UNITE_LEGALE_COLUMNS,
)


def test_the_api_is_asked_for_every_variable_the_mapping_reads():
    assert set(FLAT_FIELDS) <= set(CHAMPS) <= fields.KNOWN_FIELDS
    assert len(set(CHAMPS)) == len(CHAMPS)
    assert fields.in_api_order(reversed(CHAMPS)) == CHAMPS


def test_the_stock_layouts_hold_the_api_variables():
    # StockEtablissement: the record's fields and both addresses, without the period history.
    assert set(STOCK_ETABLISSEMENT_COLUMNS) == (
        fields.KNOWN_FIELDS - set(fields.UNITE_LEGALE) - {"dateFin"}
        - {f for f in fields.PERIODE if f.startswith("changement")}
    )
    assert set(STOCK_UNITE_LEGALE_COLUMNS) - set(fields.UNITE_LEGALE) == {
        "siren", "nombrePeriodesUniteLegale", "dateDebut",
    }


def test_in_api_order_refuses_a_name_the_api_does_not_have():
    with pytest.raises(ValueError, match=r"denominationUniteLegal$"):
        fields.in_api_order(["siret", "denominationUniteLegal"])
