"""One SIRENE establishment → one `enterprise_entreprise` row (docs/data-model.md).

Two shapes come in and share every rule:

* API records (`GET /siret`): top-level fields, `uniteLegale{}`, `adresseEtablissement{}`,
  `periodesEtablissement[]` newest first (the current period has `dateFin` null or absent);
* flat stock rows (StockEtablissement, optionally joined with StockUniteLegale): values in
  `FLAT_FIELDS` order, the current period being the row itself.

Both become the same string columns (`FLAT_FIELDS`) and go through `map_table`, so the API
and the stock can never disagree on a rule. `map_table` works on whole columns (docs/
architecture.md): rules on one value run once per distinct value, and the rare values
outside the common formats go to the same Python parsers.

Diffusion (`statutDiffusionEtablissement`, docs/data-model.md): `O` maps in full; `P` has
its masked fields NULL, and a natural person whose name is masked is stored without a name
(never published); `N` or any other value keeps only identifiers, activity, commune, dates
and state. The position (`sirene_lat`/`sirene_lng`, lib/sirene/geography.py) is kept for `O`
only: like the street, it is personal data.

Presentation choices (the registry writes everything in capitals):

* Company names (`denominationUniteLegale`) are kept exactly as INSEE gives them. Case rules
  for trade names are unknowable (acronyms, brands, `L'`, `SARL`, `McDONALD`), and keeping
  the registry's form makes re-runs compare equal to the source.
* Natural persons are written `Prénom NOM`, the French civil-status convention: the first
  name capitalised segment by segment (`JEAN-PIERRE` → `Jean-Pierre`), the surname kept in
  capitals as registered, so that particles (`DE LA FONTAINE`) are never mis-cased.
* Addresses follow the postal standard (NF Z10-011): capitals, the type of street written
  out (`AV` → `AVENUE`, `ALL` → `ALLÉE`), the repetition index as a word (`B` → `BIS`), then
  the complement after a comma. Old INSEE codes and full BAN labels (`AVENUE`, `ALLEE`)
  end up in the same form.
* `[ND]` (masked by partial diffusion) is never data: a masked field becomes NULL, and a
  street line with any masked part is dropped as a whole rather than stored half-masked.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from foxreviews_pipeline.lib.sirene import fields, geography
from foxreviews_pipeline.lib.sirene.identifiers import sirets_valid

ENTREPRISE_COLUMNS: tuple[str, ...] = (
    "siret",
    "siren",
    "nom",
    "nom_commercial",
    "adresse",
    "code_postal",
    "ville_nom",
    "code_commune",
    "naf_code",
    "naf_nomenclature",
    "naf25_code",
    "is_active",
    "date_creation",
    "date_fermeture",
    "est_siege",
    "tranche_effectifs",
    "statut_diffusion",
    "date_dernier_traitement",
    # The establishment's position, WGS84, converted from SIRENE's Lambert coordinates in
    # its territory's projection (`sirene_epsg`); NULL when withheld (geography.py).
    "sirene_lat",
    "sirene_lng",
    "sirene_epsg",
)

# The columns `map_table` takes (in this order for flat rows): SIRENE's own field names, so
# that a stock row (StockEtablissement joined with StockUniteLegale) is handed over as read.
FLAT_FIELDS: tuple[str, ...] = (
    "siret",
    "siren",
    "statutDiffusionEtablissement",
    "dateCreationEtablissement",
    "trancheEffectifsEtablissement",
    "dateDernierTraitementEtablissement",
    "etablissementSiege",
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "codeCommuneEtablissement",
    "dateDebut",
    "etatAdministratifEtablissement",
    "enseigne1Etablissement",
    "denominationUsuelleEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
    "activitePrincipaleNAF25Etablissement",
    "denominationUniteLegale",
    "nomUniteLegale",
    "nomUsageUniteLegale",
    "prenom1UniteLegale",
    "prenomUsuelUniteLegale",
    "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
)

# Legal-unit fields that the stock takes from StockUniteLegale (joined on siren).
UNITE_LEGALE_NAME_FIELDS: tuple[str, ...] = (
    "denominationUniteLegale",
    "nomUniteLegale",
    "nomUsageUniteLegale",
    "prenom1UniteLegale",
    "prenomUsuelUniteLegale",
)

# Bump when a rule below changes what a record maps to: rows mapped by older rules are then
# mapped again on the next run of their day instead of being skipped as unchanged.
MAPPING_VERSION = 4

NAF_REV2 = "NAFRev2"
NAF_2025 = "NAF2025"

REJECT_INVALID_SIRET = "invalid_siret"
REJECT_NO_NAME = "no_name"
REJECTION_REASONS: dict[str, str] = {
    REJECT_INVALID_SIRET: (
        "SIRET missing, not 14 digits, failing its check digit, or not matching the SIREN"
    ),
    REJECT_NO_NAME: (
        "no usable name (no denomination and no natural-person surname, or masked [ND])"
    ),
}


class Rejection(NamedTuple):
    siret: str | None
    reason: str
    message: str


ND = "[ND]"

# INSEE's typeVoieEtablissement codes with their official labels, upper-cased with the
# accents French spelling requires
# (https://www.sirene.fr/sirene/public/variable/typeVoieEtablissement).
TYPE_VOIE_CODES: dict[str, str] = {
    "AIRE": "AIRE",
    "ALL": "ALLÉE",
    "AV": "AVENUE",
    "BASE": "BASE",
    "BD": "BOULEVARD",
    "CAMI": "CAMI",
    "CAR": "CARREFOUR",
    "CHE": "CHEMIN",
    "CHEM": "CHEMINEMENT",
    "CHS": "CHAUSSÉE",
    "CITE": "CITÉ",
    "CLOS": "CLOS",
    "COIN": "COIN",
    "COR": "CORNICHE",
    "COTE": "CÔTE",
    "COUR": "COUR",
    "CRS": "COURS",
    "DOM": "DOMAINE",
    "DSC": "DESCENTE",
    "ECA": "ÉCART",
    "ESP": "ESPLANADE",
    "FG": "FAUBOURG",
    "GARE": "GARE",
    "GR": "GRANDE RUE",
    "HAM": "HAMEAU",
    "HLE": "HALLE",
    "ILOT": "ÎLOT",
    "IMP": "IMPASSE",
    "LD": "LIEU-DIT",
    "LOT": "LOTISSEMENT",
    "MAR": "MARCHÉ",
    "MTE": "MONTÉE",
    "PARC": "PARC",
    "PAS": "PASSAGE",
    "PL": "PLACE",
    "PLAN": "PLAN",
    "PLN": "PLAINE",
    "PLT": "PLATEAU",
    "PONT": "PONT",
    "PORT": "PORT",
    "PRO": "PROMENADE",
    "PRV": "PARVIS",
    "QUA": "QUARTIER",
    "QUAI": "QUAI",
    "RES": "RÉSIDENCE",
    "RLE": "RUELLE",
    "ROC": "ROCADE",
    "RPT": "ROND-POINT",
    "RTE": "ROUTE",
    "RUE": "RUE",
    "SEN": "SENTIER",
    "SQ": "SQUARE",
    "TOUR": "TOUR",
    "TPL": "TERRE-PLEIN",
    "TRA": "TRAVERSE",
    "VLA": "VILLA",
    "VLGE": "VILLAGE",
    "VOIE": "VOIE",
    "ZA": "ZONE ARTISANALE",
    "ZAC": "ZONE D'AMÉNAGEMENT CONCERTÉ",
    "ZAD": "ZONE D'AMÉNAGEMENT DIFFÉRÉ",
    "ZI": "ZONE INDUSTRIELLE",
    "ZONE": "ZONE",
}

# INSEE's indiceRepetitionEtablissement codes; any other letter is printed as it is (12 A).
INDICE_REPETITION: dict[str, str] = {
    "B": "BIS",
    "T": "TER",
    "Q": "QUATER",
    "C": "QUINQUIES",
    "BIS": "BIS",
    "TER": "TER",
    "QUATER": "QUATER",
    "QUINQUIES": "QUINQUIES",
}


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(folded.replace("-", " ").upper().split())


def _build_type_voie_table() -> dict[str, str]:
    table = dict(TYPE_VOIE_CODES)
    # Since the RNE (2023) SIRENE also carries full BAN labels, with or without accents.
    for label in TYPE_VOIE_CODES.values():
        table.setdefault(_fold(label), label)
        table.setdefault(label, label)
    table.setdefault("SENTE", "SENTE")
    table.setdefault("LIEU DIT", "LIEU-DIT")
    table.setdefault("ROND POINT", "ROND-POINT")
    return table


_TYPE_VOIE: dict[str, str] = _build_type_voie_table()


def type_voie_label(value: str | None) -> str | None:
    """The written-out street type for an INSEE code or a BAN label; unknown values as given."""
    if not value or value == ND:
        return None
    key = value.strip().upper()
    label = _TYPE_VOIE.get(key)
    if label is None:
        label = _TYPE_VOIE.get(_fold(key), key)
    return label


# 1900-01-01 is INSEE's "creation date not known" (documentation of dateCreationEtablissement).
_UNKNOWN_CREATION = date(1900, 1, 1)

_DIGITS = frozenset("0123456789")
_NAF_COMPACT_LEN = 5  # "6201Z"

# --- Rules on one value ------------------------------------------------------------------
# Applied once per distinct value of a column (`_per_value`) or to the rare values the
# column expressions below leave to Python; they take text, as every column is text.


def _text(value: str) -> str | None:
    value = value.strip()
    if not value or value == ND:
        return None
    return value


def _parse_date(value: str) -> date | None:
    if not value or value == ND:
        return None
    try:
        return date.fromisoformat(value if len(value) == 10 else value[:10])
    except ValueError:
        return None


def _parse_timestamp(value: str) -> datetime | None:
    if not value or value == ND:
        return None
    try:
        # Python ≥ 3.11 reads both the API's "…T10:15:30.000" and the stock's "…T10:15:30".
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # INSEE writes no offset; one would be dropped, as the `timestamp` column drops it.
    return parsed.replace(tzinfo=None)


def _bool(value: str) -> bool | None:
    text = value.strip().lower()
    if text in ("true", "1", "o", "oui", "t"):
        return True
    if text in ("false", "0", "n", "non", "f"):
        return False
    return None


def _naf(code: str, dotted: bool) -> str | None:
    """An activity code in capitals; a compact code (`6201Z`) is dotted when `dotted` (NAF
    rév. 2 and NAF 2025, or no nomenclature given)."""
    text = _text(code)
    if text is None:
        return None
    text = text.upper()
    if (
        dotted
        and len(text) == _NAF_COMPACT_LEN
        and text[0] in _DIGITS
        and text[1] in _DIGITS
        and text[2] in _DIGITS
        and text[3] in _DIGITS
        and text[4] not in _DIGITS
    ):
        return f"{text[:2]}.{text[2:]}"
    return text


def _activity_code(activite: str, dotted: bool) -> str | None:
    """The establishment's activity code; a code already written `NN.NNL` is kept as given."""
    if not activite or activite == ND:
        return None
    if len(activite) == 6 and activite[2] == ".":
        return activite
    return _naf(activite, dotted)


def _first_name(value: str) -> str:
    return "-".join(
        " ".join(word.capitalize() for word in part.split()) for part in value.split("-")
    )


def _street_type(value: str) -> str | None:
    label = _TYPE_VOIE.get(value)
    return label if label is not None else type_voie_label(value)


def _repetition(value: str) -> str:
    up = value.upper()
    return INDICE_REPETITION.get(up, up)


def _postal_code(value: str) -> str | None:
    return value if len(value) == 5 and value.isdigit() else None


# --- Columns -----------------------------------------------------------------------------

_STRING = pa.string()
_NULL_STRING = pa.scalar(None, _STRING)
_UNKNOWN_CREATION_DAYS = (_UNKNOWN_CREATION - date(1970, 1, 1)).days
_US_PER_DAY = 86_400_000_000
_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"

ENTREPRISE_SCHEMA = pa.schema(
    [
        (name, pa.bool_())
        if name in ("is_active", "est_siege")
        else (name, pa.date32())
        if name in ("date_creation", "date_fermeture")
        else (name, pa.timestamp("us"))
        if name == "date_dernier_traitement"
        else (name, pa.float64())
        if name in ("sirene_lat", "sirene_lng")
        else (name, pa.int32())
        if name == "sirene_epsg"
        else (name, _STRING)
        for name in ENTREPRISE_COLUMNS
    ]
)


def _column(data: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    values = data.column(name)
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    if values.type != _STRING:
        values = values.cast(_STRING)
    return values


def _true(condition: pa.Array) -> np.ndarray:
    """A boolean column as a numpy mask, NULL counting as false."""
    mask: np.ndarray = pc.fill_null(condition, False).to_numpy(zero_copy_only=False)
    return mask


def _null_where(values: pa.Array, where: np.ndarray | pa.Array) -> pa.Array:
    """`values` with the rows `where` (no NULLs) set to NULL; only the validity bitmap is
    rebuilt, the data is shared."""
    if isinstance(where, np.ndarray):
        if not where.any():
            return values
        where = pa.array(where)
    if values.offset:
        return pc.if_else(where, pa.scalar(None, values.type), values)
    keep = pc.and_not(pc.is_valid(values), where)
    return pa.Array.from_buffers(
        values.type, len(values), [keep.buffers()[1], *values.buffers()[1:]]
    )


_ABSENT = pa.array(["", ND], _STRING)
_DOTTED = pa.array([NAF_REV2, NAF_2025], _STRING)
_EMPTY_TEXT = pa.array([""], _STRING)


def _given(values: pa.Array) -> pa.Array:
    """NULL for the values that carry nothing: empty, or masked `[ND]`."""
    return _null_where(values, pc.is_in(values, value_set=_ABSENT))


def _nonempty(values: pa.Array) -> pa.Array:
    return _null_where(values, pc.is_in(values, value_set=_EMPTY_TEXT))


def _per_value(values: pa.Array, rule: Callable[[str], Any], type_: pa.DataType) -> pa.Array:
    """`rule` applied once per distinct value of `values` (NULL stays NULL)."""
    encoded = pc.dictionary_encode(values)
    results = pa.array([rule(v) for v in encoded.dictionary.to_pylist()], type_)
    return results.take(encoded.indices)


def _patch(
    target: pa.Array, source: pa.Array, where: np.ndarray, rule: Callable[[str], Any]
) -> pa.Array:
    """`target` with the rows `where` replaced by `rule` of `source` (the rare rows the
    column expressions leave to Python)."""
    rows = np.flatnonzero(where)
    if not len(rows):
        return target
    fixed = [rule(v) for v in source.take(pa.array(rows)).to_pylist()]
    return pc.replace_with_mask(target, pa.array(where), pa.array(fixed, target.type))


def _join(parts: Sequence[pa.Array], separator: str) -> pa.Array:
    """The non-NULL parts of each row joined by `separator`; NULL when all are NULL."""
    present = np.zeros(len(parts[0]), bool)
    for part in parts:
        present |= _true(pc.is_valid(part))
    last = parts[-1]
    if not present.all():
        # With `skip`, binary_join_element_wise leaves the rows whose parts are all NULL out
        # of its output (pyarrow 26) instead of emitting "": they get "" as their last part.
        last = pc.if_else(pa.array(present), last, pa.scalar("", _STRING))
    joined = pc.binary_join_element_wise(*parts[:-1], last, separator, null_handling="skip")
    return _null_where(joined, ~present)


def _leading_digits(values: pa.Array, rows: np.ndarray, width: int) -> np.ndarray:
    """(len(rows), width): the first `width` bytes minus `0` of the strings at `rows`, which
    must be at least `width` ASCII bytes long."""
    if not len(rows):
        return np.zeros((0, width), np.uint8)
    selected = values.take(pa.array(rows))
    if not _true(pc.equal(pc.binary_length(selected), width)).all():
        selected = pc.utf8_slice_codeunits(selected, 0, width)
    # Strings of `width` bytes each lie end to end in the data buffer.
    start = np.frombuffer(selected.buffers()[1], np.int32, count=1, offset=selected.offset * 4)[0]
    data = np.frombuffer(selected.buffers()[2], np.uint8, count=len(rows) * width, offset=start)
    return data.reshape(len(rows), width) - np.uint8(48)


def _number(digits: np.ndarray, first: int, last: int) -> np.ndarray:
    """The decimal number written in columns first…last-1 of a digit matrix."""
    result = digits[:, first].astype(np.int64)
    for i in range(first + 1, last):
        result *= 10
        result += digits[:, i]
    return result


def _days(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days since 1970-01-01 of `YYYY-MM-DD…` digit rows, and whether the date exists."""
    y, m, d = _number(digits, 0, 4), _number(digits, 5, 7), _number(digits, 8, 10)
    months = (y - 1970) * 12 + m - 1
    # numpy's calendar: the first day of the month and of the next one.
    first = months.astype("datetime64[M]").astype("datetime64[D]").view(np.int64)
    following = (months + 1).astype("datetime64[M]").astype("datetime64[D]").view(np.int64)
    ok = (y >= 1) & (m >= 1) & (m <= 12) & (d >= 1) & (d <= following - first)
    return first + d - 1, ok


def _dates(values: pa.Array) -> pa.Array:
    """`_parse_date` of a column: a `YYYY-MM-DD` start by column, anything else by Python."""
    fast = np.flatnonzero(_true(pc.match_substring_regex(values, _DATE_PATTERN)))
    days = np.zeros(len(values), np.int64)
    ok = np.zeros(len(values), bool)
    if len(fast):
        days[fast], ok[fast] = _days(_leading_digits(values, fast, 10))
    result = pa.array(days.astype(np.int32), pa.int32(), mask=~ok).view(pa.date32())
    return _patch(result, values, ~ok & _true(pc.is_valid(values)), _parse_date)


def _timestamps(values: pa.Array) -> pa.Array:
    """`_parse_timestamp` of a column: `YYYY-MM-DDTHH:MM:SS[.ffffff]` by column, anything else
    by Python."""
    fast = np.flatnonzero(_true(pc.match_substring_regex(values, _TIMESTAMP_PATTERN)))
    micros = np.zeros(len(values), np.int64)
    ok = np.zeros(len(values), bool)
    if len(fast):
        digits = _leading_digits(values, fast, 19)
        days, exists = _days(digits)
        hour, minute, second = (_number(digits, i, i + 2) for i in (11, 14, 17))
        micros[fast] = days * _US_PER_DAY + (hour * 3600 + minute * 60 + second) * 1_000_000
        ok[fast] = exists & (hour < 24) & (minute < 60) & (second < 60)
        lengths = np.asarray(pc.binary_length(values))[fast]
        fraction = fast[lengths > 19]
        if len(fraction):
            # ".f" to ".ffffff": the digits after the dot, right-padded to microseconds.
            text = pc.utf8_slice_codeunits(values.take(pa.array(fraction)), 20, 26)
            padded = pc.utf8_rpad(text, width=6, padding="0")
            micros[fraction] += np.asarray(padded.cast(pa.int64()))
    result = pa.array(micros, pa.int64(), mask=~ok).view(pa.timestamp("us"))
    return _patch(result, values, ~ok & _true(pc.is_valid(values)), _parse_timestamp)


def treatment_times(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`dateDernierTraitementEtablissement` values as the timestamps the mapping stores."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return _timestamps(values.cast(_STRING))


def _valid_sirets(siret: pa.Array) -> np.ndarray:
    well_formed = _true(pc.match_substring_regex(siret, r"^[0-9]{14}$"))
    valid = np.zeros(len(siret), bool)
    rows = np.flatnonzero(well_formed)
    valid[rows] = sirets_valid(_leading_digits(siret, rows, 14))
    return valid


def _names(c: Mapping[str, pa.Array]) -> pa.Array:
    """The company name as registered, or `Prénom NOM` for a natural person; NULL if masked
    or absent."""
    denomination = c["denominationUniteLegale"]
    company = _given(denomination)
    has_company = _true(pc.is_valid(company))
    # A denomination with spaces around it is stripped (and may then be nothing at all).
    padded = has_company & _true(
        pc.or_(pc.starts_with(denomination, " "), pc.ends_with(denomination, " "))
    )
    company = _patch(company, denomination, padded, _text)
    surname = pc.coalesce(_given(c["nomUsageUniteLegale"]), _given(c["nomUniteLegale"]))
    first = pc.coalesce(_given(c["prenomUsuelUniteLegale"]), _given(c["prenom1UniteLegale"]))
    first = _per_value(first, _first_name, _STRING)
    person = pc.coalesce(pc.binary_join_element_wise(first, surname, " "), surname)
    return pc.if_else(pa.array(has_company), company, person)


def _addresses(c: Mapping[str, pa.Array]) -> pa.Array:
    """The postal street line (`12 BIS AVENUE DES LILAS, BÂTIMENT B`); a street with any
    masked part is dropped as a whole."""
    street_fields = (
        "numeroVoieEtablissement",
        "indiceRepetitionEtablissement",
        "typeVoieEtablissement",
        "libelleVoieEtablissement",
    )
    masked = np.zeros(len(c["siret"]), bool)
    for name in street_fields:
        masked |= _true(pc.equal(c[name], ND))
    numero = _nonempty(c["numeroVoieEtablissement"])
    indice = _per_value(_nonempty(c["indiceRepetitionEtablissement"]), _repetition, _STRING)
    # The repetition index only follows a number.
    indice = _null_where(indice, pc.is_null(numero))
    type_voie = _per_value(_nonempty(c["typeVoieEtablissement"]), _street_type, _STRING)
    street = _join([numero, indice, type_voie, _nonempty(c["libelleVoieEtablissement"])], " ")
    street = _null_where(street, masked | _true(pc.equal(street, "")))
    return _join([street, _given(c["complementAdresseEtablissement"])], ", ")


def _postal_codes(values: pa.Array) -> pa.Array:
    """Five digits or NULL; non-ASCII text is judged by Python's `isdigit`."""
    ascii_ok = _true(pc.match_substring_regex(values, r"^[0-9]{5}$"))
    result = _null_where(values, ~ascii_ok)
    return _patch(result, values, _true(pc.invert(pc.string_is_ascii(values))), _postal_code)


def map_table(data: pa.Table | pa.RecordBatch) -> tuple[pa.Table, list[Rejection]]:
    """Map SIRENE establishments given as string columns named as `FLAT_FIELDS`.

    Returns the mapped rows (`ENTREPRISE_SCHEMA`, in input order) and the rejected ones
    (in input order).
    """
    c = {name: _column(data, name) for name in FLAT_FIELDS}
    siret = c["siret"]

    valid = _valid_sirets(siret)
    siren_of_siret = pc.utf8_slice_codeunits(siret, 0, 9)
    siren = c["siren"]
    differs = pc.and_(pc.not_equal(siren, ""), pc.not_equal(siren, siren_of_siret))
    mismatch = valid & _true(differs)
    for row in np.flatnonzero(mismatch):
        # Spaces around the SIREN are forgiven.
        given = siren[row].as_py()
        mismatch[row] = _text(given) != siren_of_siret[row].as_py()

    name = _names(c)
    statut = c["statutDiffusionEtablissement"]
    diffusible = _true(pc.equal(statut, "O"))
    partial = _true(pc.equal(statut, "P"))
    name_masked = np.zeros(len(siret), bool)
    for field in ("denominationUniteLegale", "nomUniteLegale", "nomUsageUniteLegale"):
        name_masked |= _true(pc.equal(c[field], ND))
    # A partially diffusible person whose name INSEE masked is stored without a name (never
    # published); a record that simply has no name is not an establishment we can show.
    nameless = _true(pc.is_null(name)) & (diffusible | (partial & ~name_masked))

    etat = c["etatAdministratifEtablissement"]
    creation = _dates(c["dateCreationEtablissement"])
    unknown = pc.equal(creation.view(pa.int32()), _UNKNOWN_CREATION_DAYS)
    creation = _null_where(creation, _true(unknown))
    closed = pc.fill_null(pc.equal(etat, "F"), False)
    # The end date of the current period is the closing date of a closed establishment.
    fermeture = _dates(pc.if_else(closed, c["dateDebut"], _NULL_STRING))

    nomenclature = _given(c["nomenclatureActivitePrincipaleEtablissement"])
    # Compact codes are dotted in NAF rév. 2, NAF 2025, or when no nomenclature is given.
    dotted = pc.or_kleene(pc.is_null(nomenclature), pc.is_in(nomenclature, value_set=_DOTTED))
    activite = pc.dictionary_encode(c["activitePrincipaleEtablissement"])
    distinct = activite.dictionary.to_pylist()
    naf_code = pc.if_else(
        dotted,
        pa.array([_activity_code(v, True) for v in distinct], _STRING).take(activite.indices),
        pa.array([_activity_code(v, False) for v in distinct], _STRING).take(activite.indices),
    )

    # The NAF 2025 code: INSEE's own field, else the principal activity when it is stated in
    # NAF 2025 (from 2027-01-01).
    naf25_code = _per_value(
        c["activitePrincipaleNAF25Etablissement"], lambda v: _naf(v, True), _STRING
    )
    stated_2025 = pc.fill_null(pc.equal(nomenclature, NAF_2025), False)
    naf25_code = pc.if_else(pc.and_(stated_2025, pc.is_null(naf25_code)), naf_code, naf25_code)

    nom_commercial = pc.coalesce(
        _given(c["denominationUsuelleEtablissement"]), _given(c["enseigne1Etablissement"])
    )
    # Non-diffusible ("N", or any value but O/P): the person opted out of publication. Only
    # identifiers, activity, commune, dates and state are kept.
    hidden = ~(diffusible | partial)
    # The position is personal data, like the street: only a diffusible (O) one is kept.
    found = geography.positions(
        c["coordonneeLambertAbscisseEtablissement"],
        c["coordonneeLambertOrdonneeEtablissement"],
        c["codeCommuneEtablissement"],
        ~diffusible,
    )
    sirene_lat, sirene_lng, sirene_epsg = found.columns()
    columns = {
        "siret": siret,
        "siren": siren_of_siret,
        "nom": _null_where(name, hidden),
        "nom_commercial": _null_where(nom_commercial, hidden),
        "adresse": _null_where(_addresses(c), hidden),
        "code_postal": _null_where(_postal_codes(c["codePostalEtablissement"]), hidden),
        "ville_nom": _given(c["libelleCommuneEtablissement"]),
        "code_commune": _given(c["codeCommuneEtablissement"]),
        "naf_code": naf_code,
        "naf_nomenclature": nomenclature,
        "naf25_code": naf25_code,
        "is_active": pc.fill_null(pc.equal(etat, "A"), False),
        "date_creation": creation,
        "date_fermeture": fermeture,
        "est_siege": _per_value(c["etablissementSiege"], _bool, pa.bool_()),
        "tranche_effectifs": _null_where(_given(c["trancheEffectifsEtablissement"]), hidden),
        "statut_diffusion": _given(statut),
        "date_dernier_traitement": _timestamps(c["dateDernierTraitementEtablissement"]),
        "sirene_lat": sirene_lat,
        "sirene_lng": sirene_lng,
        "sirene_epsg": sirene_epsg,
    }
    table = pa.Table.from_arrays(list(columns.values()), schema=ENTREPRISE_SCHEMA)

    rejected = ~valid | mismatch | nameless
    table = _with_position_counts(table, found.counts(~rejected))
    if not rejected.any():
        return table, []
    rows = np.flatnonzero(rejected)
    rejections = []
    for i, siret_value, siren_value in zip(
        rows.tolist(),
        siret.take(pa.array(rows)).to_pylist(),
        siren.take(pa.array(rows)).to_pylist(),
        strict=True,
    ):
        if not valid[i]:
            rejections.append(
                Rejection(siret_value, REJECT_INVALID_SIRET, f"invalid SIRET {siret_value!r}")
            )
        elif mismatch[i]:
            message = f"SIREN {siren_value!r} does not match SIRET {siret_value!r}"
            rejections.append(Rejection(siret_value, REJECT_INVALID_SIRET, message))
        else:
            message = f"no usable name for SIRET {siret_value}"
            rejections.append(Rejection(siret_value, REJECT_NO_NAME, message))
    return table.filter(pa.array(~rejected)), rejections


_POSITIONS_KEY = b"foxreviews.positions"


def _with_position_counts(table: pa.Table, counts: Mapping[str, Any]) -> pa.Table:
    return table.replace_schema_metadata({_POSITIONS_KEY: orjson.dumps(counts)})


def position_counts(mapped: pa.Table) -> dict[str, Any]:
    """How many of the rows `map_table` mapped got a position, and why the others did not
    (`geography.Positions.counts`); empty for a table that did not come from `map_table`."""
    metadata = mapped.schema.metadata or {}
    given = metadata.get(_POSITIONS_KEY)
    return dict(orjson.loads(given)) if given else {}


# --- Records and rows --------------------------------------------------------------------

_EMPTY: Mapping[str, Any] = {}
_ADDRESS_FIELDS = frozenset(fields.ADRESSE)
_PERIOD_FIELDS = frozenset(fields.CURRENT_PERIODE)
_UNITE_LEGALE_FIELDS = frozenset(UNITE_LEGALE_NAME_FIELDS)


def _current_period(record: Mapping[str, Any]) -> Mapping[str, Any]:
    periods: Sequence[Mapping[str, Any]] | None = record.get("periodesEtablissement")
    if not periods:
        return _EMPTY
    first = periods[0]
    if first.get("dateFin") is None:
        return first
    for period in periods:
        if period.get("dateFin") is None:
            return period
    return first


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _text_array(values: Sequence[Any]) -> pa.Array:
    """A string column; JSON booleans and numbers become their text."""
    try:
        return pa.array(values, _STRING)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([_as_text(v) for v in values], _STRING)


def _group_columns(parts: list[Mapping[str, Any]], names: Sequence[str]) -> dict[str, pa.Array]:
    """The text fields `names` of each part (a record or one of its groups) as columns."""
    try:
        # Arrow reads dicts of text as struct rows in one pass.
        struct = pa.array(parts, pa.struct([(name, _STRING) for name in names]))
        columns = struct.flatten()
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        columns = [_text_array([part.get(name) for part in parts]) for name in names]
    return dict(zip(names, columns, strict=True))


def records_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """API-shaped records as `FLAT_FIELDS` string columns (the current period's values)."""
    records = list(records)
    groups: dict[str, list[Mapping[str, Any]]] = {
        "address": [r.get("adresseEtablissement") or _EMPTY for r in records],
        "period": [_current_period(r) for r in records],
        "unite": [r.get("uniteLegale") or _EMPTY for r in records],
        "record": records,
    }
    fields_of: dict[str, list[str]] = {group: [] for group in groups}
    for name in FLAT_FIELDS:
        if name in _ADDRESS_FIELDS:
            fields_of["address"].append(name)
        elif name in _PERIOD_FIELDS:
            fields_of["period"].append(name)
        elif name in _UNITE_LEGALE_FIELDS:
            fields_of["unite"].append(name)
        elif name != "etablissementSiege":
            fields_of["record"].append(name)
    columns = {"etablissementSiege": _text_array([r.get("etablissementSiege") for r in records])}
    for group, parts in groups.items():
        columns.update(_group_columns(parts, fields_of[group]))
    return pa.Table.from_arrays([columns[name] for name in FLAT_FIELDS], names=list(FLAT_FIELDS))
