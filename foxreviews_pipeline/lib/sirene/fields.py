"""SIRENE's variable names, grouped as API Sirene 3.11 nests them in a `/siret` record.

Every other list of SIRENE fields is derived from these groups: the variables asked of the
API (`client.CHAMPS`), the StockEtablissement layouts (`stock.LAYOUTS`), the stock-day
records' nesting and the sample's records. StockUniteLegale's header is written here too,
and the `uniteLegale{}` group derived from it. Only `mapping.FLAT_FIELDS`, whose order is
the mapping's argument order, names its fields itself.
"""

from __future__ import annotations

from collections.abc import Iterable

# Top-level fields of an establishment record.
ETABLISSEMENT: tuple[str, ...] = (
    "siren",
    "nic",
    "siret",
    "statutDiffusionEtablissement",
    "dateCreationEtablissement",
    "trancheEffectifsEtablissement",
    "anneeEffectifsEtablissement",
    "activitePrincipaleRegistreMetiersEtablissement",
    "dateDernierTraitementEtablissement",
    "etablissementSiege",
    "nombrePeriodesEtablissement",
    "activitePrincipaleNAF25Etablissement",
)
# StockUniteLegale's header: the legal unit's variables as INSEE orders them.
STOCK_UNITE_LEGALE: tuple[str, ...] = (
    "siren",
    "statutDiffusionUniteLegale",
    "unitePurgeeUniteLegale",
    "dateCreationUniteLegale",
    "sigleUniteLegale",
    "sexeUniteLegale",
    "prenom1UniteLegale",
    "prenom2UniteLegale",
    "prenom3UniteLegale",
    "prenom4UniteLegale",
    "prenomUsuelUniteLegale",
    "pseudonymeUniteLegale",
    "identifiantAssociationUniteLegale",
    "trancheEffectifsUniteLegale",
    "anneeEffectifsUniteLegale",
    "dateDernierTraitementUniteLegale",
    "nombrePeriodesUniteLegale",
    "categorieEntreprise",
    "anneeCategorieEntreprise",
    "dateDebut",
    "etatAdministratifUniteLegale",
    "nomUniteLegale",
    "nomUsageUniteLegale",
    "denominationUniteLegale",
    "denominationUsuelle1UniteLegale",
    "denominationUsuelle2UniteLegale",
    "denominationUsuelle3UniteLegale",
    "categorieJuridiqueUniteLegale",
    "activitePrincipaleUniteLegale",
    "nomenclatureActivitePrincipaleUniteLegale",
    "nicSiegeUniteLegale",
    "economieSocialeSolidaireUniteLegale",
    "societeMissionUniteLegale",
    "caractereEmployeurUniteLegale",
)
# `uniteLegale{}`: the same variables but the key and the stock's own history fields.
UNITE_LEGALE: tuple[str, ...] = tuple(
    f for f in STOCK_UNITE_LEGALE if f not in ("siren", "nombrePeriodesUniteLegale", "dateDebut")
)
# `adresseEtablissement{}`
ADRESSE: tuple[str, ...] = (
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "dernierNumeroVoieEtablissement",
    "indiceRepetitionDernierNumeroVoieEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "libelleCommuneEtrangerEtablissement",
    "distributionSpecialeEtablissement",
    "codeCommuneEtablissement",
    "codeCedexEtablissement",
    "libelleCedexEtablissement",
    "codePaysEtrangerEtablissement",
    "libellePaysEtrangerEtablissement",
    "identifiantAdresseEtablissement",
    "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
)
# `adresse2Etablissement{}` (the secondary address)
ADRESSE2: tuple[str, ...] = (
    "complementAdresse2Etablissement",
    "numeroVoie2Etablissement",
    "indiceRepetition2Etablissement",
    "typeVoie2Etablissement",
    "libelleVoie2Etablissement",
    "codePostal2Etablissement",
    "libelleCommune2Etablissement",
    "libelleCommuneEtranger2Etablissement",
    "distributionSpeciale2Etablissement",
    "codeCommune2Etablissement",
    "codeCedex2Etablissement",
    "libelleCedex2Etablissement",
    "codePaysEtranger2Etablissement",
    "libellePaysEtranger2Etablissement",
)
# Each element of `periodesEtablissement[]` (newest first; the current one has no dateFin).
PERIODE: tuple[str, ...] = (
    "dateFin",
    "dateDebut",
    "etatAdministratifEtablissement",
    "changementEtatAdministratifEtablissement",
    "enseigne1Etablissement",
    "enseigne2Etablissement",
    "enseigne3Etablissement",
    "changementEnseigneEtablissement",
    "denominationUsuelleEtablissement",
    "changementDenominationUsuelleEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
    "changementActivitePrincipaleEtablissement",
    "caractereEmployeurEtablissement",
    "changementCaractereEmployeurEtablissement",
)
# The current period as the stock file and the stock-day records carry it: no end date,
# no change flags.
CURRENT_PERIODE: tuple[str, ...] = tuple(
    f for f in PERIODE if f != "dateFin" and not f.startswith("changement")
)

NESTED_OBJECTS: tuple[str, ...] = ("uniteLegale", "adresseEtablissement", "adresse2Etablissement")
_API_ORDER: tuple[str, ...] = ETABLISSEMENT + UNITE_LEGALE + ADRESSE + ADRESSE2 + PERIODE
KNOWN_FIELDS: frozenset[str] = frozenset(_API_ORDER)


def in_api_order(names: Iterable[str]) -> tuple[str, ...]:
    """`names` (SIRENE variables, each once) in the order of an API record."""
    wanted = set(names)
    unknown = sorted(wanted - KNOWN_FIELDS)
    if unknown:
        raise ValueError(f"not SIRENE establishment variables: {', '.join(unknown)}")
    return tuple(f for f in _API_ORDER if f in wanted)
