"""The per-record mapping rules as they stood before the columnar mapping: the oracle that
the differential tests hold `mapping.map_table` to. Frozen on purpose: a deliberate change of
a rule shows up here as a difference, to be made in both places (and `MAPPING_VERSION`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from foxreviews_pipeline.lib.sirene import geography
from foxreviews_pipeline.lib.sirene.identifiers import siret_valid
from foxreviews_pipeline.lib.sirene.mapping import (
    INDICE_REPETITION,
    ND,
    REJECT_INVALID_SIRET,
    REJECT_NO_NAME,
    TYPE_VOIE_CODES,
    Rejection,
)


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


def _naf25(activite: Any, activite_naf25: Any, nomenclature: str | None) -> str | None:
    """INSEE's NAF 2025 field, else the principal activity when stated in NAF 2025."""
    code = _naf(activite_naf25, "NAF2025") if activite_naf25 else None
    if code is None and nomenclature == "NAF2025":
        code = _activity_code(activite, nomenclature)
    return code


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
    lambert_x: Any = None,
    lambert_y: Any = None,
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
        _naf25(activite, activite_naf25, nomenclature),
        is_active,
        creation,
        date_fermeture,
        siege if siege is True or siege is False else _bool(siege),
        tranche_effectifs if tranche_effectifs and tranche_effectifs != ND else None,
        statut_diffusion if statut_diffusion and statut_diffusion != ND else None,
        _parse_timestamp(date_dernier_traitement),
        *_position(lambert_x, lambert_y, code_commune, diffusible),
    )


_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?")


def _coordinate(value: Any) -> float | None:
    if value.__class__ is not str:
        return None
    text = value.strip().replace(",", ".")
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _position(
    x: Any, y: Any, code_commune: Any, diffusible: bool
) -> tuple[float | None, float | None, int | None]:
    """(lat, lng, epsg) of SIRENE's Lambert coordinates, converted in the projection of the
    commune's territory; NULL when masked, absent, not diffusible, of no known territory, or
    outside the département's extent."""
    if x == ND or y == ND:
        return None, None, None
    x_value, y_value = _coordinate(x), _coordinate(y)
    if x_value is None or y_value is None or not diffusible:
        return None, None, None
    code = code_commune if code_commune.__class__ is str and code_commune != ND else None
    departement = None
    if code is not None and len(code) >= 2:
        departement = code[:3] if code.startswith(("97", "98")) else code[:2]
    if departement not in geography.DEPARTEMENT_EXTENTS:
        return None, None, None
    epsg = geography.EPSG_BY_TERRITORY.get(departement, geography.LAMBERT_93)
    lng, lat = geography.transformer(epsg).transform(x_value, y_value)
    west, south, east, north = geography.DEPARTEMENT_EXTENTS[departement]
    margin = geography.EXTENT_MARGIN_DEG
    if not (west - margin <= lng <= east + margin and south - margin <= lat <= north + margin):
        return None, None, None
    return float(lat), float(lng), epsg


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
        ad.get("coordonneeLambertAbscisseEtablissement"),
        ad.get("coordonneeLambertOrdonneeEtablissement"),
    )


def map_flat(values: Sequence[Any]) -> tuple[Any, ...] | Rejection:
    """Map one flat row (values in FLAT_FIELDS order, e.g. a joined stock row)."""
    return _map_values(*values)


