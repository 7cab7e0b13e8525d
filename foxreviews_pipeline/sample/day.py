"""Deterministic synthetic SIRENE days in the exact JSON shape of API Sirene 3.11 `/siret`.

`generate_day(day, communes, naf_codes)` returns about 35,000 establishment records whose
`dateDernierTraitementEtablissement` falls on `day`. The same arguments always give the same
records. Each establishment is an *identity* (the k-th establishment first seen on some day)
from which its SIREN, SIRET, names, address and activity derive, so that an establishment
seen again on a later day (an update: closure, move, new activity or sign) is the same
business with the same identifiers.

What it contains, in proportions close to a real day: companies and natural persons,
secondary establishments, closures (F), partially diffusible records ("[ND]" in the masked
fields, commune code kept), La Poste establishments (the SIRET key exception), missing
optional fields, old abbreviations and full labels in `typeVoieEtablissement`, a few
long-closed establishments still coded in NAF rév. 1, a few foreign or code-less addresses.
"""

from __future__ import annotations

import copy
import gc
import random
import unicodedata
import zlib
from bisect import bisect
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from itertools import accumulate
from typing import Any

from foxreviews_pipeline.lib.reference.naf2025 import NAF2025_SWITCH
from foxreviews_pipeline.lib.sirene import fields
from foxreviews_pipeline.lib.sirene.identifiers import (
    LA_POSTE_SIREN,
    la_poste_nic,
    luhn_check_digit,
)
from foxreviews_pipeline.lib.sirene.mapping import ND
from foxreviews_pipeline.sample.positions import commune_lambert

# Masked when statutDiffusion is "P" (INSEE's list); the commune stays.
_MASKED_ADDRESS = (
    "complementAdresseEtablissement", "numeroVoieEtablissement", "indiceRepetitionEtablissement",
    "dernierNumeroVoieEtablissement", "indiceRepetitionDernierNumeroVoieEtablissement",
    "typeVoieEtablissement", "libelleVoieEtablissement", "codePostalEtablissement",
    "distributionSpecialeEtablissement", "codeCedexEtablissement", "libelleCedexEtablissement",
    "identifiantAdresseEtablissement", "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
)
_MASKED_PERSON = (
    "sexeUniteLegale", "nomUniteLegale", "nomUsageUniteLegale", "prenom1UniteLegale",
    "prenom2UniteLegale", "prenom3UniteLegale", "prenom4UniteLegale", "prenomUsuelUniteLegale",
    "pseudonymeUniteLegale",
)
_MASKED_PERIOD = (
    "enseigne1Etablissement", "enseigne2Etablissement", "enseigne3Etablissement",
    "denominationUsuelleEtablissement",
)

# (code INSEE, code postal, libellé) — a few real communes, arrondissements included.
FALLBACK_COMMUNES: tuple[tuple[str, str, str], ...] = (
    ("75101", "75001", "Paris 1er Arrondissement"),
    ("75108", "75008", "Paris 8e Arrondissement"),
    ("75111", "75011", "Paris 11e Arrondissement"),
    ("75115", "75015", "Paris 15e Arrondissement"),
    ("75118", "75018", "Paris 18e Arrondissement"),
    ("13201", "13001", "Marseille 1er Arrondissement"),
    ("13208", "13008", "Marseille 8e Arrondissement"),
    ("69381", "69001", "Lyon 1er Arrondissement"),
    ("69383", "69003", "Lyon 3e Arrondissement"),
    ("31555", "31000", "Toulouse"),
    ("31555", "31100", "Toulouse"),
    ("33063", "33000", "Bordeaux"),
    ("44109", "44000", "Nantes"),
    ("59350", "59000", "Lille"),
    ("67482", "67000", "Strasbourg"),
    ("06088", "06000", "Nice"),
    ("35238", "35000", "Rennes"),
    ("34172", "34000", "Montpellier"),
    ("2A004", "20000", "Ajaccio"),
    ("2B033", "20200", "Bastia"),
    ("97411", "97400", "Saint-Denis"),
    ("01001", "01400", "L'Abergement-Clémenciat"),
    ("92046", "92240", "Malakoff"),
    ("94041", "94200", "Ivry-sur-Seine"),
    ("64445", "64000", "Pau"),
    ("87085", "87000", "Limoges"),
)

# Real NAF rév. 2 sous-classes, most frequent trades first (the order drives the skew).
COMMON_NAF_CODES: tuple[str, ...] = (
    "68.20A", "70.22Z", "56.10A", "43.21A", "96.02A", "86.21Z", "47.91B", "43.22A",
    "49.32Z", "62.01Z", "56.10C", "45.20A", "69.10Z", "68.31Z", "10.71C", "85.59A",
    "96.04Z", "93.13Z", "81.21Z", "43.31Z", "43.34Z", "41.20A", "86.90E", "74.10Z",
    "71.11Z", "90.01Z", "73.11Z", "86.23Z", "47.11D", "53.20Z", "55.10Z", "43.99C",
    "49.41A", "47.19B", "82.99Z", "01.11Z", "68.10Z", "64.20Z", "88.91A", "94.99Z",
)
FALLBACK_NAF_CODES: tuple[str, ...] = (
    *COMMON_NAF_CODES,
    "84.11Z", "85.20Z", "86.10Z", "47.73Z", "47.76Z", "95.11Z", "45.11Z", "10.71D",
    "56.30Z", "86.22C",
)
# NAF rév. 1 (2003) codes: long-closed establishments keep them.
NAF_REV1_CODES: tuple[str, ...] = ("55.3A", "52.4C", "50.2Z", "93.0D", "85.3K", "74.1A", "45.4J")

_FIRST_NAMES_M = ("JEAN", "PIERRE", "MICHEL", "PHILIPPE", "ALAIN", "NICOLAS", "THOMAS",
                  "JULIEN", "KEVIN", "LUCAS", "HUGO", "MOHAMED", "KARIM", "ANTOINE",
                  "SEBASTIEN", "FRANCOIS", "LOUIS", "MAXIME", "YANNICK", "DAVID")
_FIRST_NAMES_F = ("MARIE", "NATHALIE", "ISABELLE", "SYLVIE", "CATHERINE", "SOPHIE", "JULIE",
                  "CAMILLE", "LEA", "EMMA", "SARAH", "LAURA", "FATIMA", "CHLOE", "MANON",
                  "AURELIE", "CELINE", "STEPHANIE", "ELODIE", "INES")
_LAST_NAMES = ("MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND",
               "DUBOIS", "MOREAU", "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX",
               "DAVID", "BERTRAND", "MOREL", "FOURNIER", "GIRARD", "BONNET", "DUPONT",
               "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT", "MULLER", "LEFEVRE", "FAURE",
               "ANDRE", "MERCIER", "BLANC", "GUERIN", "BOYER", "GARNIER", "CHEVALIER",
               "FRANCOIS", "LEGRAND", "GAUTHIER", "GARCIA", "PERRIN", "ROBIN", "CLEMENT",
               "MORIN", "NICOLAS", "HENRY", "ROUSSEL", "MATHIEU", "GAUTIER", "MASSON",
               "NGUYEN", "DIALLO", "BENALI", "DA SILVA", "LE GALL", "LE BRIS", "ETCHEVERRY")
_COMPANY_WORDS = ("ATLANTIQUE", "HORIZON", "PROVENCE", "SOLUTIONS", "CONSEIL", "SERVICES",
                  "BATIMENT", "RENOVATION", "HABITAT", "DIGITAL", "GROUPE", "INVEST",
                  "IMMOBILIER", "TRANSPORTS", "NORD", "SUD", "ALPES", "BRETAGNE", "OCEAN",
                  "LUMIERE", "ELEC", "PLOMBERIE", "BOULANGERIE", "GOURMET", "SANTE",
                  "FORMATION", "LOGISTIQUE", "ENERGIES", "DESIGN", "EVASION", "PATRIMOINE",
                  "ARTISANS", "MEDITERRANEE", "VAL DE LOIRE", "CONCEPT", "EXPERTISE")
_LEGAL_FORMS = (("5710", 34), ("5499", 18), ("5720", 14), ("6540", 12), ("5498", 6),
                ("9220", 8), ("5599", 3), ("5308", 1), ("6599", 2), ("7220", 1), ("5202", 1))
_STREET_TYPES = (("RUE", 40), ("AV", 7), ("AVENUE", 4), ("BD", 4), ("BOULEVARD", 2),
                 ("PL", 3), ("PLACE", 1), ("CHE", 5), ("CHEMIN", 2), ("RTE", 5), ("ROUTE", 2),
                 ("IMP", 3), ("IMPASSE", 1), ("ALL", 3), ("ALLEE", 1), ("QUA", 1), ("QUAI", 1),
                 ("RES", 2), ("SQ", 1), ("CRS", 1), ("COURS", 1), ("LD", 2), ("ZA", 1),
                 ("PASS", 1), ("FG", 1), ("HAM", 1), ("SEN", 1))
_STREET_NAMES = ("DE LA REPUBLIQUE", "VICTOR HUGO", "JEAN JAURES", "DU GENERAL DE GAULLE",
                 "PASTEUR", "DES ECOLES", "DE LA GARE", "DU MOULIN", "DE L EGLISE",
                 "NATIONALE", "DES LILAS", "DU STADE", "DE PARIS", "GAMBETTA", "JULES FERRY",
                 "DU 8 MAI 1945", "DE LA MAIRIE", "DES ACACIAS", "FOCH", "CARNOT",
                 "DU CHATEAU", "DES VIGNES", "DE LA LIBERATION", "SAINT MARTIN",
                 "DU COMMANDANT CHARCOT", "DES PRES", "DE LA PAIX", "MARCEL PAGNOL")
_COMPLEMENTS = ("BAT A", "RESIDENCE LES PINS", "ZI DU BREUIL", "CENTRE COMMERCIAL LES ARCADES",
                "ZAC DES CHAMPS", "2EME ETAGE", "LOT 12")
_TRANCHES = ((None, 30), ("NN", 35), ("00", 8), ("01", 10), ("02", 6), ("03", 4), ("11", 3),
             ("12", 2), ("21", 1), ("22", 1))
_FOREIGN = (("99131", "BELGIQUE", "BRUXELLES"), ("99140", "SUISSE", "GENEVE"),
            ("99137", "LUXEMBOURG", "LUXEMBOURG"), ("99127", "ITALIE", "MILAN"))

# Shares of a day (per record).
UPDATE_SHARE = 0.20  # establishments seen on an earlier day
SECONDARY_SHARE = 0.12
PERSON_SHARE = 0.55
PARTIAL_DIFFUSION_SHARE = 0.03
REV1_SHARE = 0.004
LA_POSTE_SHARE = 0.0005
NO_COMMUNE_CODE_SHARE = 0.002
FOREIGN_SHARE = 0.001
NEW_CLOSED_SHARE = 0.03
UPDATE_CLOSED_SHARE = 0.30

_EPOCH = date(2020, 1, 1)
_DAYS_PER_CYCLE = 1000
_IDS_PER_DAY = 100_000  # _DAYS_PER_CYCLE * _IDS_PER_DAY == 10**8: SIRENs never collide.
_SIREN_MULT = 61_803_399  # coprime with 10: (MULT*i + ADD) % 10**8 is a bijection
_SIREN_ADD = 12_345_677
_MAX_LOOKBACK_DAYS = 365


def _upper_ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return "".join(c for c in folded if not unicodedata.combining(c)).upper()


def _sirene_commune_label(code: str, libelle: str) -> str:
    """SIRENE's spelling: upper case, no accents; arrondissements as PARIS 8, LYON 3EME…"""
    if code.startswith("751") and code[3:].isdigit():
        return f"PARIS {int(code[3:])}"
    if code.startswith("132") and code[3:].isdigit():
        return f"MARSEILLE {int(code[3:])}"
    if code.startswith("6938"):
        n = int(code[4:])
        return f"LYON {n}{'ER' if n == 1 else 'EME'}"
    return _upper_ascii(libelle)


def _weighted(pairs: Sequence[tuple[Any, int]]) -> tuple[list[Any], list[int]]:
    values = [v for v, _ in pairs]
    return values, list(accumulate(w for _, w in pairs))


class _Tables:
    """Per-call lookup tables: communes and NAF codes with their weights."""

    _BIG_CITIES = frozenset({"31555", "06088", "44109", "67482", "34172", "33063", "59350",
                             "35238", "21231", "49007", "76540", "37261", "63113", "38185"})

    def __init__(self, communes: Sequence[Sequence[str]], naf_codes: Sequence[str]):
        rows = sorted({(str(c[0]), str(c[1]), str(c[2])) for c in communes})
        if not rows:
            raise ValueError("communes must not be empty")
        self.communes = [(code, cp, _sirene_commune_label(code, lib)) for code, cp, lib in rows]
        # Where each commune's establishments are, in its territory's projection.
        self.lambert = commune_lambert([code for code, _, _ in self.communes])
        weights = [
            25 if code in self._BIG_CITIES or code.startswith(("751", "132", "6938")) else 1
            for code, _, _ in self.communes
        ]
        self.commune_cum = list(accumulate(weights))

        codes = sorted(set(naf_codes))
        if not codes:
            raise ValueError("naf_codes must not be empty")
        present = set(codes)
        common = [c for c in COMMON_NAF_CODES if c in present]
        rest = [c for c in codes if c not in set(common)]
        random.Random("foxreviews-naf-rank").shuffle(rest)
        self.naf = common + rest
        # Zipf-like: the r-th most common trade weighs 1/(r+2)^0.85.
        self.naf_cum = list(accumulate(1.0 / (r + 2) ** 0.85 for r in range(len(self.naf))))
        self.legal_forms, self.legal_cum = _weighted(_LEGAL_FORMS)
        self.street_types, self.street_cum = _weighted(_STREET_TYPES)
        self.tranches, self.tranche_cum = _weighted(_TRANCHES)


def _pick(r: random.Random, seq: Sequence[Any]) -> Any:
    # random.choice is several times slower, and 35,000 records make ~200,000 picks.
    return seq[int(r.random() * len(seq))]


def _pick_weighted(r: random.Random, seq: Sequence[Any], cum: Sequence[float]) -> Any:
    return seq[bisect(cum, r.random() * cum[-1])]


def _iso(d: date) -> str:
    return d.isoformat()


def _day_slot(d: date) -> int:
    return (d - _EPOCH).days % _DAYS_PER_CYCLE


def _siren_for(identity: int) -> str:
    base = (_SIREN_MULT * identity + _SIREN_ADD) % 10**8
    siren = f"{base:08d}"
    siren += luhn_check_digit(siren)
    if siren == LA_POSTE_SIREN:  # its SIRETs follow another rule; keep it for La Poste itself
        return _siren_for(identity + _IDS_PER_DAY * _DAYS_PER_CYCLE - 1)
    return siren


def _nic_for(siren: str, ordinal: int) -> str:
    nic4 = f"{ordinal:04d}"
    return nic4 + luhn_check_digit(siren + nic4)


def _person_name(r: random.Random) -> tuple[str, str, str]:
    sexe = "F" if r.random() < 0.45 else "M"
    first = _pick(r, _FIRST_NAMES_F if sexe == "F" else _FIRST_NAMES_M)
    return sexe, first, _pick(r, _LAST_NAMES)


def _company_name(r: random.Random, legal_form: str) -> str:
    roll = r.random()
    if legal_form == "6540":
        suffix = f" {_pick(r, _COMPANY_WORDS)}" if roll < 0.3 else ""
        return f"SCI {_pick(r, _LAST_NAMES)}{suffix}"
    if legal_form == "9220":
        return f"ASSOCIATION {_pick(r, _COMPANY_WORDS)} {_pick(r, _COMPANY_WORDS)}"
    if roll < 0.4:
        return f"{_pick(r, _COMPANY_WORDS)} {_pick(r, _COMPANY_WORDS)}"
    if roll < 0.7:
        return f"{_pick(r, _LAST_NAMES)} {_pick(r, _COMPANY_WORDS)}"
    if roll < 0.85:
        return f"{_pick(r, _LAST_NAMES)} ET FILS"
    return f"{_pick(r, _COMPANY_WORDS)} {_pick(r, _LAST_NAMES)} {_pick(r, ('SAS', 'SARL', 'EURL'))}"


def _timestamp(r: random.Random, d: date) -> str:
    # INSEE's daily processing is mostly overnight and early morning.
    seconds = int(r.triangular(0, 86_399, 6 * 3600))
    ms = r.randrange(1000)
    hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{d.isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}"


def _period(date_debut: str, date_fin: str | None, etat: str, naf: str, nomenclature: str,
            enseigne: str | None, denomination_usuelle: str | None, employeur: str,
            changes: tuple[bool, bool, bool, bool]) -> dict[str, Any]:
    return {
        "dateFin": date_fin,
        "dateDebut": date_debut,
        "etatAdministratifEtablissement": etat,
        "changementEtatAdministratifEtablissement": changes[0],
        "enseigne1Etablissement": enseigne,
        "enseigne2Etablissement": None,
        "enseigne3Etablissement": None,
        "changementEnseigneEtablissement": changes[1],
        "denominationUsuelleEtablissement": denomination_usuelle,
        "changementDenominationUsuelleEtablissement": False,
        "activitePrincipaleEtablissement": naf,
        "nomenclatureActivitePrincipaleEtablissement": nomenclature,
        "changementActivitePrincipaleEtablissement": changes[2],
        "caractereEmployeurEtablissement": employeur,
        "changementCaractereEmployeurEtablissement": changes[3],
    }


def _address(r: random.Random, t: _Tables) -> dict[str, Any]:
    code, cp, label = _pick_weighted(r, t.communes, t.commune_cum)
    numero = str(r.randint(1, 150)) if r.random() < 0.82 else None
    street_type = _pick_weighted(r, t.street_types, t.street_cum)
    has_ban = numero is not None and r.random() < 0.6
    address = {
        "complementAdresseEtablissement": _pick(r, _COMPLEMENTS) if r.random() < 0.1 else None,
        "numeroVoieEtablissement": numero,
        "indiceRepetitionEtablissement": (
            _pick(r, ("B", "T")) if numero and r.random() < 0.04 else None
        ),
        "dernierNumeroVoieEtablissement": None,
        "indiceRepetitionDernierNumeroVoieEtablissement": None,
        "typeVoieEtablissement": street_type,
        "libelleVoieEtablissement": _pick(r, _STREET_NAMES if street_type != "LD" else _LAST_NAMES),
        "codePostalEtablissement": cp,
        "libelleCommuneEtablissement": label,
        "libelleCommuneEtrangerEtablissement": None,
        "distributionSpecialeEtablissement": None,
        "codeCommuneEtablissement": code,
        "codeCedexEtablissement": None,
        "libelleCedexEtablissement": None,
        "codePaysEtrangerEtablissement": None,
        "libellePaysEtrangerEtablissement": None,
        "identifiantAdresseEtablissement": (
            f"{code}_{r.randrange(10000):04d}_{int(numero):05d}" if has_ban and numero else None
        ),
        "coordonneeLambertAbscisseEtablissement": None,
        "coordonneeLambertOrdonneeEtablissement": None,
    }
    if has_ban:
        # A few kilometres around the commune's point (the same draws as ever).
        dx, dy = r.uniform(-2_000, 2_000), r.uniform(-2_000, 2_000)
        point = t.lambert.get(code)
        if point is not None:
            address["coordonneeLambertAbscisseEtablissement"] = f"{point[0] + dx:.1f}"
            address["coordonneeLambertOrdonneeEtablissement"] = f"{point[1] + dy:.1f}"
    roll = r.random()
    if roll < FOREIGN_SHARE:
        pays, libelle_pays, ville = _pick(r, _FOREIGN)
        address.update({
            "codePostalEtablissement": None, "codeCommuneEtablissement": None,
            "libelleCommuneEtablissement": None, "libelleCommuneEtrangerEtablissement": ville,
            "codePaysEtrangerEtablissement": pays, "libellePaysEtrangerEtablissement": libelle_pays,
            "identifiantAdresseEtablissement": None,
            "coordonneeLambertAbscisseEtablissement": None,
            "coordonneeLambertOrdonneeEtablissement": None,
        })
    elif roll < FOREIGN_SHARE + NO_COMMUNE_CODE_SHARE:
        address["codeCommuneEtablissement"] = None
        address["identifiantAdresseEtablissement"] = None
    elif roll < 0.012 and cp.isdigit():
        address["codeCedexEtablissement"] = cp[:2] + f"{r.randint(300, 999)}"
        address["libelleCedexEtablissement"] = f"{label} CEDEX"
    return address


_EMPTY_ADRESSE2 = dict.fromkeys(fields.ADRESSE2)


def _identity_record(identity: int, born: date, t: _Tables, seed: int) -> dict[str, Any]:
    """The establishment as it was when first seen on `born` (its state before any update)."""
    r = random.Random(identity * 1_000_003 + seed)
    is_la_poste = r.random() < LA_POSTE_SHARE
    if is_la_poste:
        siren = LA_POSTE_SIREN
        nic = la_poste_nic(f"{(identity * 7) % 10_000:04d}")
        siege = False
    else:
        siren = _siren_for(identity)
        siege = r.random() >= SECONDARY_SHARE
        nic = _nic_for(siren, 1 if siege else r.randint(2, 40))
    rev1 = not is_la_poste and r.random() < REV1_SHARE
    partial = not is_la_poste and r.random() < PARTIAL_DIFFUSION_SHARE
    person = not is_la_poste and r.random() < PERSON_SHARE

    if rev1:
        created = date(r.randint(1982, 2003), r.randint(1, 12), r.randint(1, 28))
    elif r.random() < 0.9:
        created = born - timedelta(days=r.randint(0, 30))
    else:
        created = born - timedelta(days=r.randint(31, 20 * 365))

    naf = _pick_weighted(r, t.naf, t.naf_cum)
    if is_la_poste:
        naf = "53.10Z"
    ul_created = created if siege else created - timedelta(days=r.randint(30, 6000))
    unite = dict.fromkeys(fields.UNITE_LEGALE)
    unite.update({
        "etatAdministratifUniteLegale": "A",
        "statutDiffusionUniteLegale": "P" if partial else "O",
        "dateCreationUniteLegale": _iso(ul_created),
        "activitePrincipaleUniteLegale": naf,
        "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
        "economieSocialeSolidaireUniteLegale": "N",
        "nicSiegeUniteLegale": nic if siege else _nic_for(siren, 1),
        "dateDernierTraitementUniteLegale": (
            f"{_iso(born)}T0{r.randint(1, 6)}:{r.randrange(60):02d}:00.000"
        ),
        "categorieEntreprise": _pick(r, ("PME", "PME", None)),
        "anneeCategorieEntreprise": "2022",
        "trancheEffectifsUniteLegale": "NN" if r.random() < 0.6 else None,
    })
    enseigne = None
    if is_la_poste:
        unite.update({
            "categorieJuridiqueUniteLegale": "5599",
            "denominationUniteLegale": "LA POSTE",
            "categorieEntreprise": "GE",
            "dateCreationUniteLegale": "1991-01-01",
            "nicSiegeUniteLegale": "00048",
            "trancheEffectifsUniteLegale": "53",
        })
        enseigne = "LA POSTE"
    elif person:
        sexe, first, last = _person_name(r)
        unite.update({
            "categorieJuridiqueUniteLegale": "1000",
            "sexeUniteLegale": sexe,
            "nomUniteLegale": last,
            "prenom1UniteLegale": first,
            "prenomUsuelUniteLegale": first,
            "prenom2UniteLegale": _pick(r, _FIRST_NAMES_F if sexe == "F" else _FIRST_NAMES_M)
            if r.random() < 0.5 else None,
            "nomUsageUniteLegale": (
                _pick(r, _LAST_NAMES) if sexe == "F" and r.random() < 0.25 else None
            ),
        })
        if r.random() < 0.15:
            enseigne = f"{_pick(r, ('CHEZ', 'ATELIER', 'MAISON'))} {first}"
    else:
        legal = _pick_weighted(r, t.legal_forms, t.legal_cum)
        name = _company_name(r, legal)
        unite.update({
            "categorieJuridiqueUniteLegale": legal,
            "denominationUniteLegale": name,
            "sigleUniteLegale": (
                "".join(w[0] for w in name.split()[:3]) if r.random() < 0.05 else None
            ),
            "identifiantAssociationUniteLegale": (
                f"W{r.randrange(10**9):09d}" if legal == "9220" else None
            ),
        })
        if r.random() < 0.2:
            enseigne = f"{_pick(r, _COMPANY_WORDS)} {_pick(r, _LAST_NAMES)}"

    denomination_usuelle = enseigne if enseigne and r.random() < 0.3 else None
    employeur = "O" if r.random() < 0.2 else "N"
    tranche = _pick_weighted(r, t.tranches, t.tranche_cum)
    address = _address(r, t)

    if rev1:
        closed = created + timedelta(days=r.randint(400, 4000))
        closed = min(closed, date(2007, 12, 31))
        naf_rev1 = _pick(r, NAF_REV1_CODES)
        unite.update({"activitePrincipaleUniteLegale": naf_rev1,
                      "nomenclatureActivitePrincipaleUniteLegale": "NAFRev1",
                      "etatAdministratifUniteLegale": "C" if person or siege else "A"})
        periods = [
            _period(_iso(closed), None, "F", naf_rev1, "NAFRev1", enseigne, denomination_usuelle,
                    "N", (True, False, False, False)),
            _period(_iso(created), _iso(closed - timedelta(days=1)), "A", naf_rev1, "NAFRev1",
                    enseigne, denomination_usuelle, employeur, (False, False, False, False)),
        ]
    else:
        periods = [_period(_iso(created), None, "A", naf, "NAFRev2", enseigne,
                           denomination_usuelle, employeur, (False, False, False, False))]

    record = {
        "siren": siren,
        "nic": nic,
        "siret": siren + nic,
        "statutDiffusionEtablissement": "P" if partial else "O",
        "dateCreationEtablissement": _iso(created),
        "trancheEffectifsEtablissement": tranche,
        "anneeEffectifsEtablissement": "2022" if tranche not in (None, "NN") else None,
        "activitePrincipaleRegistreMetiersEtablissement": None,
        "dateDernierTraitementEtablissement": None,
        "etablissementSiege": siege,
        "nombrePeriodesEtablissement": len(periods),
        "activitePrincipaleNAF25Etablissement": None,
        "uniteLegale": unite,
        "adresseEtablissement": address,
        "adresse2Etablissement": dict(_EMPTY_ADRESSE2),
        "periodesEtablissement": periods,
    }
    return record


def _apply_update(record: dict[str, Any], r: random.Random, day: date, t: _Tables) -> None:
    """Turn the identity's first state into the change INSEE processed on `day`."""
    periods = record["periodesEtablissement"]
    current = periods[0]
    if current["etatAdministratifEtablissement"] == "F":
        return  # a correction on a long-closed establishment: nothing historised changes
    start = day - timedelta(days=r.randint(0, 20))
    start = max(start, date.fromisoformat(current["dateDebut"]) + timedelta(days=1))
    if start > day:
        return
    roll = r.random()
    changes = (False, False, False, False)
    new = dict(current)
    if roll < UPDATE_CLOSED_SHARE:
        new["etatAdministratifEtablissement"] = "F"
        new["caractereEmployeurEtablissement"] = "N"
        changes = (True, False, False, current["caractereEmployeurEtablissement"] != "N")
        unite = record["uniteLegale"]
        if record["etablissementSiege"] and unite["categorieJuridiqueUniteLegale"] == "1000":
            unite["etatAdministratifUniteLegale"] = "C"
    elif roll < UPDATE_CLOSED_SHARE + 0.12:
        new["activitePrincipaleEtablissement"] = _pick_weighted(r, t.naf, t.naf_cum)
        changes = (False, False, True, False)
    elif roll < UPDATE_CLOSED_SHARE + 0.22 and record["statutDiffusionEtablissement"] == "O":
        new["enseigne1Etablissement"] = f"{_pick(r, _COMPANY_WORDS)} {_pick(r, _COMPANY_WORDS)}"
        changes = (False, True, False, False)
    elif roll < UPDATE_CLOSED_SHARE + 0.35:
        record["adresseEtablissement"] = _address(r, t)  # a move: not historised by SIRENE
        return
    else:
        record["trancheEffectifsEtablissement"] = _pick(r, ("NN", "01", "02", "03"))
        return
    new.update({
        "dateDebut": _iso(start),
        "dateFin": None,
        "changementEtatAdministratifEtablissement": changes[0],
        "changementEnseigneEtablissement": changes[1],
        "changementActivitePrincipaleEtablissement": changes[2],
        "changementCaractereEmployeurEtablissement": changes[3],
    })
    current["dateFin"] = _iso(start - timedelta(days=1))
    periods.insert(0, new)
    record["nombrePeriodesEtablissement"] = len(periods)


def _close_new(record: dict[str, Any], r: random.Random, day: date) -> None:
    periods = record["periodesEtablissement"]
    current = periods[0]
    if current["etatAdministratifEtablissement"] == "F":
        return
    created = date.fromisoformat(current["dateDebut"])
    closed = min(day, created + timedelta(days=r.randint(1, 60)))
    if closed <= created:
        return
    current["dateFin"] = _iso(closed - timedelta(days=1))
    new = dict(current, dateDebut=_iso(closed), dateFin=None, etatAdministratifEtablissement="F",
               changementEtatAdministratifEtablissement=True)
    periods.insert(0, new)
    record["nombrePeriodesEtablissement"] = len(periods)


def _mask(record: dict[str, Any]) -> None:
    address = record["adresseEtablissement"]
    for key in _MASKED_ADDRESS:
        address[key] = ND
    unite = record["uniteLegale"]
    if unite["categorieJuridiqueUniteLegale"] == "1000":
        for key in _MASKED_PERSON:
            unite[key] = ND
    unite["sigleUniteLegale"] = ND
    for period in record["periodesEtablissement"]:
        for key in _MASKED_PERIOD:
            period[key] = ND


def naf25_code(naf25: Mapping[str, str | Sequence[str]], rev2: str, siret: str) -> str | None:
    """The NAF 2025 code of an establishment with this rév. 2 code: one of its correspondents,
    always the same for the same SIRET."""
    targets = naf25.get(rev2)
    if not targets:
        return None
    if isinstance(targets, str):
        return targets
    return sorted(targets)[zlib.crc32(siret.encode()) % len(targets)]


def _add_naf25(
    record: dict[str, Any], naf25: Mapping[str, str | Sequence[str]], *, stated: bool
) -> None:
    current = record["periodesEtablissement"][0]
    if current["nomenclatureActivitePrincipaleEtablissement"] != "NAFRev2":
        return
    code = naf25_code(naf25, current["activitePrincipaleEtablissement"], record["siret"])
    record["activitePrincipaleNAF25Etablissement"] = code
    if stated and code:
        current["activitePrincipaleEtablissement"] = code
        current["nomenclatureActivitePrincipaleEtablissement"] = "NAF2025"


def switch_to_naf2025(records: Sequence[Mapping[str, Any]], day: date) -> list[dict[str, Any]]:
    """The same records as INSEE sends them once the switch is made: processed on `day`,
    their current activity stated in NAF 2025 (their `activitePrincipaleNAF25Etablissement`),
    nothing else changed."""
    switched = []
    for record in records:
        new = copy.deepcopy(dict(record))
        current = new["periodesEtablissement"][0]
        code = new.get("activitePrincipaleNAF25Etablissement")
        if code and current["nomenclatureActivitePrincipaleEtablissement"] == "NAFRev2":
            current["activitePrincipaleEtablissement"] = code
            current["nomenclatureActivitePrincipaleEtablissement"] = "NAF2025"
        new["dateDernierTraitementEtablissement"] = f"{day.isoformat()}T05:00:00.000"
        switched.append(new)
    return switched


def generate_day(
    day: date,
    communes: Sequence[Sequence[str]] | None = None,
    naf_codes: Sequence[str] | None = None,
    n: int = 35_000,
    seed: int = 0,
    naf25: Mapping[str, str | Sequence[str]] | None = None,
    naf2025_from: date = NAF2025_SWITCH,
) -> list[dict[str, Any]]:
    """The synthetic establishments processed by INSEE on `day`, in API Sirene JSON shape.

    `communes`: (code INSEE, code postal, libellé) tuples, arrondissements included;
    `naf_codes`: NAF rév. 2 sous-classes; `naf25`: a NAF rév. 2 → NAF 2025 correspondence
    (one code or several per rév. 2 code) that fills `activitePrincipaleNAF25Etablissement`
    of every rév. 2 record, the same code for an establishment on every day (left null
    without it). From `naf2025_from` on, as INSEE from 2027-01-01, the current period states
    its activity in NAF 2025. Same arguments → same records; the order of `communes` and
    `naf_codes` does not matter.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    n_updates = round(n * UPDATE_SHARE)
    n_new = n - n_updates
    if n_new > _IDS_PER_DAY:
        raise ValueError(f"at most {_IDS_PER_DAY} new establishments per day")
    tables = _Tables(communes or FALLBACK_COMMUNES, naf_codes or FALLBACK_NAF_CODES)
    r = random.Random(f"foxreviews-sample|{seed}|{day.isoformat()}")

    chosen: list[tuple[date, int, bool]] = [(day, k, False) for k in range(n_new)]
    seen: set[tuple[date, int]] = set()
    while len(seen) < n_updates and n_new:
        back = min(_MAX_LOOKBACK_DAYS, 1 + int(r.expovariate(1 / 60)))
        key = (day - timedelta(days=back), r.randrange(n_new))
        if key not in seen:
            seen.add(key)
            chosen.append((key[0], key[1], True))
    # Updates are interleaved with creations, as in INSEE's answers.
    r.shuffle(chosen)

    records: list[dict[str, Any]] = []
    # Hundreds of thousands of small dicts would trigger the cyclic collector again and
    # again, for nothing: none of them form cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _build(records, chosen, r, day, tables, seed, naf25, naf2025_from)
    finally:
        if gc_was_enabled:
            gc.enable()
    return records


def _build(
    records: list[dict[str, Any]],
    chosen: Sequence[tuple[date, int, bool]],
    r: random.Random,
    day: date,
    tables: _Tables,
    seed: int,
    naf25: Mapping[str, str | Sequence[str]] | None,
    naf2025_from: date,
) -> None:
    for born, k, is_update in chosen:
        identity = _day_slot(born) * _IDS_PER_DAY + k
        record = _identity_record(identity, born, tables, seed)
        if is_update:
            _apply_update(record, r, day, tables)
        elif r.random() < NEW_CLOSED_SHARE:
            _close_new(record, r, day)
        if record["statutDiffusionEtablissement"] == "P":
            _mask(record)
        if naf25:
            _add_naf25(record, naf25, stated=day >= naf2025_from)
        record["dateDernierTraitementEtablissement"] = _timestamp(r, day)
        records.append(record)

