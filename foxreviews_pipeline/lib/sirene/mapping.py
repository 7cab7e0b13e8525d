"""One SIRENE establishment → one `enterprise_entreprise` row (docs/data-model.md).

Two shapes come in and share every rule:

* API records (`GET /siret`): top-level fields, `uniteLegale{}`, `adresseEtablissement{}`,
  `periodesEtablissement[]` newest first (the current period has `dateFin` null or absent);
* flat stock rows (StockEtablissement, optionally joined with StockUniteLegale): a sequence
  of values in `FLAT_FIELDS` order, the current period being the row itself.

Both are reduced to the same positional values and go through `_map_values`, so the API and
the stock can never disagree on a rule.

Diffusion (`statutDiffusionEtablissement`, docs/data-model.md): `O` maps in full; `P` has
its masked fields NULL, and a natural person whose name is masked is stored without a name
(never published); `N` or any other value keeps only identifiers, activity, commune, dates
and state.

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
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from foxreviews_pipeline.lib.sirene.identifiers import siret_valid

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
)

# The values `_map_values` takes, in order: SIRENE's own field names, so that a stock row
# (StockEtablissement joined with StockUniteLegale) can be handed over as it is read.
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
MAPPING_VERSION = 2

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


_DIGITS = frozenset("0123456789")
_NAF_COMPACT_LEN = 5  # "6201Z"


def _text(value: object) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        value = str(value)
    value = value.strip()
    if not value or value == ND:
        return None
    return value


def _parse_date(value: Any) -> date | None:
    if not value or value == ND:
        return None
    if value.__class__ is not str:
        if isinstance(value, datetime):
            return value.date()
        return value if isinstance(value, date) else None
    try:
        return date.fromisoformat(value if len(value) == 10 else value[:10])
    except ValueError:
        return None


def _parse_timestamp(value: Any) -> datetime | None:
    if not value or value == ND:
        return None
    if value.__class__ is not str:
        return value if isinstance(value, datetime) else None
    try:
        # Python ≥ 3.11 reads both the API's "…T10:15:30.000" and the stock's "…T10:15:30".
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if value is True or value is False:
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "o", "oui", "t"):
        return True
    if text in ("false", "0", "n", "non", "f"):
        return False
    return None


def _naf(code: object, nomenclature: str | None) -> str | None:
    code = _text(code)
    if code is None:
        return None
    code = code.upper()
    # NAF rév. 2 (and NAF 2025) written without the dot, as some extracts do: "6201Z".
    if (
        len(code) == _NAF_COMPACT_LEN
        and nomenclature in (None, "NAFRev2", "NAF2025")
        and code[0] in _DIGITS
        and code[1] in _DIGITS
        and code[2] in _DIGITS
        and code[3] in _DIGITS
        and code[4] not in _DIGITS
    ):
        return f"{code[:2]}.{code[2:]}"
    return code


def _first_name(value: str) -> str:
    return "-".join(
        " ".join(word.capitalize() for word in part.split()) for part in value.split("-")
    )


# 1900-01-01 is INSEE's "creation date not known" (documentation of dateCreationEtablissement).
_UNKNOWN_CREATION = date(1900, 1, 1)


# The helpers below are called once per record from `_map_values` (the hot path), so the
# empty/[ND] tests are written inline rather than through `_text`.


def _name(
    denomination: Any, nom: Any, nom_usage: Any, prenom1: Any, prenom_usuel: Any
) -> str | None:
    """The company name as registered, or `Prénom NOM` for a natural person; None if masked
    or absent."""
    if denomination and denomination != ND:
        if denomination.__class__ is not str or denomination[0] == " " or denomination[-1] == " ":
            return _text(denomination)
        return denomination
    surname = nom_usage if nom_usage and nom_usage != ND else None
    if surname is None:
        surname = nom if nom and nom != ND else None
        if surname is None:
            return None
    first = prenom_usuel if prenom_usuel and prenom_usuel != ND else None
    if first is None:
        first = prenom1 if prenom1 and prenom1 != ND else None
    return f"{_first_name(first)} {surname}" if first else surname


def _address(
    complement: Any, numero: Any, indice: Any, type_voie: Any, libelle_voie: Any
) -> str | None:
    """The postal street line (`12 BIS AVENUE DES LILAS, BÂTIMENT B`); a street with any
    masked part is dropped as a whole."""
    street = None
    if numero != ND and indice != ND and type_voie != ND and libelle_voie != ND:
        words = []
        if numero:
            words.append(numero)
            if indice:
                up = indice.upper()
                words.append(INDICE_REPETITION.get(up, up))
        if type_voie:
            label = _TYPE_VOIE.get(type_voie)
            words.append(label if label is not None else type_voie_label(type_voie))
        if libelle_voie:
            words.append(libelle_voie)
        if words:
            street = " ".join(words)
    if complement == ND:
        complement = None
    if street and complement:
        return f"{street}, {complement}"
    return street or complement or None


def _activity_code(activite: str | None, nomenclature: str | None) -> str | None:
    """The establishment's activity code; a compact NAF rév. 2 code is dotted (`6201Z` →
    `62.01Z`)."""
    if not activite or activite == ND:
        return None
    if len(activite) == 6 and activite[2] == ".":
        return activite
    return _naf(activite, nomenclature)


def _map_values(
    siret: Any,
    siren: Any,
    statut_diffusion: Any,
    date_creation: Any,
    tranche_effectifs: Any,
    date_dernier_traitement: Any,
    siege: Any,
    complement: Any,
    numero: Any,
    indice: Any,
    type_voie: Any,
    libelle_voie: Any,
    code_postal: Any,
    libelle_commune: Any,
    code_commune: Any,
    date_debut: Any,
    etat: Any,
    enseigne1: Any,
    denomination_usuelle: Any,
    activite: Any,
    nomenclature: Any,
    activite_naf25: Any,
    denomination: Any,
    nom: Any,
    nom_usage: Any,
    prenom1: Any,
    prenom_usuel: Any,
) -> tuple[Any, ...] | Rejection:
    # Hot path (35,000 records a day, 4 million in a backfill): the empty/[ND] tests are
    # written inline rather than through _text, whose call would cost more than the test.
    if siret.__class__ is not str:
        siret = _text(siret)
    if siret is None or len(siret) != 14 or not siret_valid(siret):
        return Rejection(siret, REJECT_INVALID_SIRET, f"invalid SIRET {siret!r}")
    siren_of_siret = siret[:9]
    if siren and siren != siren_of_siret and _text(siren) != siren_of_siret:
        return Rejection(
            siret, REJECT_INVALID_SIRET, f"SIREN {siren!r} does not match SIRET {siret!r}"
        )

    name = _name(denomination, nom, nom_usage, prenom1, prenom_usuel)
    diffusible = statut_diffusion == "O"
    if name is None and (
        diffusible
        or (
            statut_diffusion == "P"
            and ND not in (denomination, nom, nom_usage)
        )
    ):
        # A partially diffusible person whose name INSEE masked is stored without a name
        # (never published); a record that simply has no name is not an establishment we
        # can show.
        return Rejection(siret, REJECT_NO_NAME, f"no usable name for SIRET {siret}")

    adresse = _address(complement, numero, indice, type_voie, libelle_voie)
    if code_postal and not (
        code_postal.__class__ is str and len(code_postal) == 5 and code_postal.isdigit()
    ):
        code_postal = None

    if not nomenclature or nomenclature == ND:
        nomenclature = None
    if etat == "A":
        is_active = True
        date_fermeture = None
    else:
        is_active = False
        date_fermeture = _parse_date(date_debut) if etat == "F" else None
    creation = _parse_date(date_creation)
    if creation == _UNKNOWN_CREATION:
        creation = None

    nom_commercial = (
        denomination_usuelle
        if denomination_usuelle and denomination_usuelle != ND
        else (enseigne1 if enseigne1 and enseigne1 != ND else None)
    )
    if not diffusible and statut_diffusion != "P":
        # Non-diffusible ("N", or any value but O/P): the person opted out of publication.
        # Only identifiers, activity, commune, dates and state are kept.
        name = nom_commercial = adresse = code_postal = tranche_effectifs = None
    return (
        siret,
        siren_of_siret,
        name,
        nom_commercial,
        adresse,
        code_postal or None,
        libelle_commune if libelle_commune and libelle_commune != ND else None,
        code_commune if code_commune and code_commune != ND else None,
        _activity_code(activite, nomenclature),
        nomenclature,
        _naf(activite_naf25, "NAF2025") if activite_naf25 else None,
        is_active,
        creation,
        date_fermeture,
        siege if siege is True or siege is False else _bool(siege),
        tranche_effectifs if tranche_effectifs and tranche_effectifs != ND else None,
        statut_diffusion if statut_diffusion and statut_diffusion != ND else None,
        _parse_timestamp(date_dernier_traitement),
    )


_EMPTY: Mapping[str, Any] = {}


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


def map_record(record: Mapping[str, Any]) -> tuple[Any, ...] | Rejection:
    """Map one API-shaped record to a row (ENTREPRISE_COLUMNS order) or a Rejection."""
    ul = record.get("uniteLegale") or _EMPTY
    ad = record.get("adresseEtablissement") or _EMPTY
    p = _current_period(record)
    get = record.get
    pget = p.get
    return _map_values(
        get("siret"),
        get("siren"),
        get("statutDiffusionEtablissement"),
        get("dateCreationEtablissement"),
        get("trancheEffectifsEtablissement"),
        get("dateDernierTraitementEtablissement"),
        get("etablissementSiege"),
        ad.get("complementAdresseEtablissement"),
        ad.get("numeroVoieEtablissement"),
        ad.get("indiceRepetitionEtablissement"),
        ad.get("typeVoieEtablissement"),
        ad.get("libelleVoieEtablissement"),
        ad.get("codePostalEtablissement"),
        ad.get("libelleCommuneEtablissement"),
        ad.get("codeCommuneEtablissement"),
        pget("dateDebut"),
        pget("etatAdministratifEtablissement"),
        pget("enseigne1Etablissement"),
        pget("denominationUsuelleEtablissement"),
        pget("activitePrincipaleEtablissement"),
        pget("nomenclatureActivitePrincipaleEtablissement"),
        get("activitePrincipaleNAF25Etablissement"),
        ul.get("denominationUniteLegale"),
        ul.get("nomUniteLegale"),
        ul.get("nomUsageUniteLegale"),
        ul.get("prenom1UniteLegale"),
        ul.get("prenomUsuelUniteLegale"),
    )


def map_flat(values: Sequence[Any]) -> tuple[Any, ...] | Rejection:
    """Map one flat row (values in FLAT_FIELDS order, e.g. a joined stock row)."""
    return _map_values(*values)


def map_flat_dict(row: Mapping[str, Any]) -> tuple[Any, ...] | Rejection:
    """Map one flat row given as a dict keyed by SIRENE field names (missing keys are NULL)."""
    return _map_values(*(row.get(field) for field in FLAT_FIELDS))


def map_records(
    records: Iterable[Mapping[str, Any]],
) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
    """Map API-shaped records: (rows in ENTREPRISE_COLUMNS order, rejections)."""
    rows: list[tuple[Any, ...]] = []
    rejections: list[Rejection] = []
    add_row = rows.append
    add_rejection = rejections.append
    for record in records:
        result = map_record(record)
        if type(result) is Rejection:
            add_rejection(result)
        else:
            add_row(result)
    return rows, rejections


def map_flat_rows(
    rows_in: Iterable[Sequence[Any]],
) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
    """Map flat rows (FLAT_FIELDS order): (rows in ENTREPRISE_COLUMNS order, rejections)."""
    rows: list[tuple[Any, ...]] = []
    rejections: list[Rejection] = []
    add_row = rows.append
    add_rejection = rejections.append
    for values in rows_in:
        result = _map_values(*values)
        if type(result) is Rejection:
            add_rejection(result)
        else:
            add_row(result)
    return rows, rejections


def row_as_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A mapped row keyed by column name (for tests, previews and metadata)."""
    return dict(zip(ENTREPRISE_COLUMNS, row, strict=True))
