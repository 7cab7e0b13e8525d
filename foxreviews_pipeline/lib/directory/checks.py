"""Quality gates on what a partition wrote, evaluated inside its transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from foxreviews_pipeline.lib.sirene.identifiers import siren_valid, siret_valid

# Text columns SIRENE ingestion writes: none may ever hold INSEE's "[ND]" mask.
_TEXT_COLUMNS = ("nom", "nom_commercial", "adresse", "code_postal", "ville_nom", "code_commune")


@dataclass
class EntrepriseAudit:
    rows: int = 0
    duplicate_sirets: int = 0
    invalid_identifiers: list[str] = field(default_factory=list)
    nd_rows: int = 0


def audit_entreprises(conn: psycopg.Connection, sirets: Sequence[str]) -> EntrepriseAudit:
    """What the establishments of these SIRETs look like in the table, now."""
    audit = EntrepriseAudit()
    nd = " OR ".join(f"{c} = '[ND]'" for c in _TEXT_COLUMNS)
    rows = conn.execute(
        f"SELECT siret, siren, ({nd}) FROM enterprise_entreprise WHERE siret = ANY(%s)",
        (list(sirets),),
    ).fetchall()
    audit.rows = len(rows)
    audit.duplicate_sirets = len(rows) - len({r[0] for r in rows})
    audit.invalid_identifiers = [
        siret for siret, siren, _ in rows if not (siret_valid(siret) and siren_valid(siren) and siret.startswith(siren))
    ]
    audit.nd_rows = sum(1 for r in rows if r[2])
    return audit


# Below these shares of a day's active establishments, something upstream is broken (the
# communes or the taxonomy not loaded, INSEE codes changed): the day is not published on.
MIN_VILLE_SHARE = 0.95
# Many NAF codes are excluded on purpose (holdings, wholesale, public bodies…): about half
# of a real day maps to a trade; far below that, the mapping is broken.
MIN_TRADE_SHARE = 0.25


def share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0
