"""The stock write path on a real PostgreSQL, as the assets run it: the file staged
(`stage_for_directory`), then applied one partition at a time (`publish_stock_partition`), each in a
transaction of its own. Counts, idempotence, duplicates, older data, crash and resume,
bounded memory (the Dagster assets themselves: pipeline/test_stock_partitions.py)."""

from __future__ import annotations

import csv
import tracemalloc

import psycopg
import pyarrow as pa
import pytest

from foxreviews_pipeline.lib.publish import PublicationHeld
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.mapping import map_table
from foxreviews_pipeline.lib.sirene.stock_staging import StockFileError, partition_tables
from foxreviews_pipeline.sample.stock_files import write_sample_stock
from foxreviews_pipeline_tests.pipeline import stock_runs
from foxreviews_pipeline_tests.pipeline.conftest import load_reference
from foxreviews_pipeline_tests.sirene.row_mapping import table_rows

# An establishment is expected to have an active ProLocalisation when it is active, its NAF
# maps to a trade and its commune resolves to a ville — computed here without the sync code.
EXPECTED_PROLOCALISATIONS = """
SELECT count(*) FROM enterprise_entreprise e
JOIN ref_naf_mapping m ON m.naf_code = e.naf_code AND m.nomenclature = e.naf_nomenclature
LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
WHERE e.is_active AND m.sous_categorie_id IS NOT NULL
  -- the diffusion policy: a person whose name INSEE masks gets no page
  AND NOT (e.statut_diffusion = 'P' AND e.nom IS NULL)
"""


@pytest.fixture
def reference(reference_db: str) -> str:
    """The NAF codes, the taxonomy and the communes: every partition is audited whole, and
    its share checks need the real ones (cloned from the session's reference template)."""
    return reference_db


def _versions(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT 'e', id, xmin::text FROM enterprise_entreprise UNION ALL "
        "SELECT 'p', id, xmin::text FROM enterprise_prolocalisation ORDER BY 1, 2"
    ).fetchall()


def _siret(siren8: str, nic4: str) -> tuple[str, str]:
    siren = siren8 + luhn_check_digit(siren8)
    siret = siren + nic4
    return siren, siret + luhn_check_digit(siret)


def _stock_row(siren8: str, nic4: str, *, name: str, treated: str, naf: str = "56.10A",
               commune: str = "69383", cp: str = "69003", etat: str = "A") -> dict:
    siren, siret = _siret(siren8, nic4)
    return {
        "siren": siren, "nic": siret[9:], "siret": siret,
        "statutDiffusionEtablissement": "O",
        "dateDernierTraitementEtablissement": treated,
        "etablissementSiege": "true",
        "numeroVoieEtablissement": "12", "typeVoieEtablissement": "RUE",
        "libelleVoieEtablissement": "DE LA REPUBLIQUE",
        "codePostalEtablissement": cp, "codeCommuneEtablissement": commune,
        "libelleCommuneEtablissement": "LYON 3EME",
        "dateDebut": "2020-01-01", "etatAdministratifEtablissement": etat,
        "activitePrincipaleEtablissement": naf,
        "nomenclatureActivitePrincipaleEtablissement": "NAFRev2",
        "denominationUniteLegale": name,
    }


# Active, publishable establishments of a trade and a ville left without a ProLocalisation.
ORPHANS = """
SELECT count(*) FROM enterprise_entreprise e
JOIN ref_naf_mapping m ON m.naf_code = e.naf_code AND m.nomenclature = e.naf_nomenclature
LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
WHERE e.is_active AND m.sous_categorie_id IS NOT NULL
  AND entreprise_publishable(e.statut_diffusion, e.nom, e.source)
  AND NOT EXISTS (SELECT 1 FROM enterprise_prolocalisation p WHERE p.entreprise_id = e.id)
"""


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.mark.parametrize(("layout", "suffix"), [(54, ".zip"), (48, ".csv")])
def test_load_counts_match_the_file(reference, tmp_path, layout, suffix):
    path, ul = tmp_path / f"StockEtablissement{suffix}", tmp_path / "StockUniteLegale.csv"
    write_sample_stock(path, 3000, layout, unites_legales_path=ul, seed=11)
    expected, rejected = stock_runs.expected(path, ul)

    results = stock_runs.apply_file(reference, path, ul, run_id="run-1", chunk_rows=100)
    result = stock_runs.total(results.values())
    with psycopg.connect(reference) as conn:
        stored = stock_runs.directory(conn)
        lineage = conn.execute(
            "SELECT DISTINCT source, last_partition, last_run_id FROM enterprise_entreprise"
        ).fetchall()
        expected_pl = conn.execute(EXPECTED_PROLOCALISATIONS).fetchone()[0]
        active_pl = conn.execute(
            "SELECT count(*) FROM enterprise_prolocalisation WHERE is_active"
        ).fetchone()[0]
        # Arrondissements resolve to their city, never to a ville of their own.
        arrondissement_villes = {r[0] for r in conn.execute(
            "SELECT DISTINCT v.code_insee FROM enterprise_prolocalisation p "
            "JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
            "JOIN location_ville v ON v.id = p.ville_id "
            "WHERE e.code_commune IN ('75108', '75111', '75115', '69383')"
        )}
        naf25 = conn.execute("SELECT count(naf25_code) FROM enterprise_entreprise").fetchone()[0]
        masked = conn.execute(
            "SELECT count(*), count(p.id) FILTER (WHERE p.is_active) FROM enterprise_entreprise e "
            "LEFT JOIN enterprise_prolocalisation p ON p.entreprise_id = e.id "
            "WHERE e.statut_diffusion = 'P' AND e.nom IS NULL"
        ).fetchone()

    assert result.records == 3000
    assert result.rejected_by_reason == dict(rejected)
    assert masked[0] > 0 and masked[1] == 0
    assert all(len(r.rejected_sample) == min(r.rejected, 20) for r in results.values())
    assert stored == expected
    assert result.entreprises.inserted == len(expected) and result.entreprises.changed == len(expected)
    # Every row of the file is accounted for: written, superseded in its batch, unchanged or
    # older than what is stored, or rejected.
    assert (
        result.entreprises.inserted + result.entreprises.updated + result.entreprises.unchanged + result.entreprises.stale
        + result.duplicates + result.rejected
    ) == 3000
    assert any(r.batches > 1 for r in results.values())
    assert lineage and set(lineage) == {
        ("sirene", f"stock:{p}", "run-1") for p, r in results.items() if r.entreprises.changed
    }
    assert expected_pl > 100
    assert result.prolocalisations.created == active_pl == expected_pl
    assert arrondissement_villes == {"75056", "69123"}
    assert result.prolocalisations.unmatched_by_reason.get("naf_excluded", 0) > 0
    # The 48-column layout has no NAF 2025 column.
    assert (naf25 > 0) == (layout == 54)


def test_rejected_rows_are_counted_and_never_stored(reference, tmp_path):
    """Rows the mapping rejects (an invalid SIRET, a legal unit with no name) are counted by
    reason and sampled, and stay out of the directory; the rest of the partition is published."""
    treated = "2024-03-01T08:00:00"
    good = [
        _stock_row(f"{10000000 + i:08d}", "0001", name=f"RESTO {i}", treated=treated)
        for i in range(150)
    ]
    _, siret = _siret("20000000", "0001")
    wrong_key = siret[:-1] + str((int(siret[-1]) + 1) % 10)
    bad = [
        {**_stock_row("20000000", "0001", name="CLE FAUSSE", treated=treated), "siret": wrong_key},
        *(
            {**_stock_row(f"3000000{i}", "0001", name=None, treated=treated), "sigleUniteLegale": "SN"}
            for i in range(2)
        ),
    ]
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, [*good[:70], *bad, *good[70:]], unites_legales_path=ul)
    expected, rejected = stock_runs.expected(path, ul)
    results = stock_runs.apply_file(reference, path, ul, chunk_rows=40)
    (result,) = results.values()
    with psycopg.connect(reference) as conn:
        stored = stock_runs.directory(conn)
    assert result.records == 153 and result.batches == 4
    assert result.rejected_by_reason == {"invalid_siret": 1, "no_name": 2} == dict(rejected)
    assert sorted((r["siret"], r["reason"]) for r in result.rejected_sample) == sorted(
        [(wrong_key, "invalid_siret"),
         *((_siret(f"3000000{i}", "0001")[1], "no_name") for i in range(2))]
    )
    assert result.entreprises.inserted == 150 and stored == expected and len(stored) == 150
    assert wrong_key not in stored


def test_reapplying_the_same_partitions_changes_nothing(reference, tmp_path):
    path, ul = tmp_path / "e.zip", tmp_path / "ul.zip"
    write_sample_stock(path, 2500, unites_legales_path=ul, seed=3)
    partitions = sorted(stock_runs.stage_file(reference, path, ul).rows_by_partition)
    first = stock_runs.total(stock_runs.apply_partitions(reference, partitions, chunk_rows=500).values())
    with psycopg.connect(reference) as conn:
        before = _versions(conn)
    # The same staging applied again: every row goes through the write path once more.
    again = stock_runs.total(
        stock_runs.apply_partitions(reference, partitions, chunk_rows=500, run_id="rerun").values()
    )
    with psycopg.connect(reference) as conn:
        after = _versions(conn)
        reruns = conn.execute(
            "SELECT count(*) FROM enterprise_entreprise WHERE last_run_id = 'rerun'"
        ).fetchone()[0]
    assert first.entreprises.changed > 2000
    assert (again.entreprises.changed, again.entreprises.inserted, again.entreprises.updated) == (0, 0, 0)
    assert again.entreprises.unchanged + again.entreprises.stale == first.entreprises.inserted + first.entreprises.updated + first.entreprises.unchanged + first.entreprises.stale
    assert again.prolocalisations.created == again.prolocalisations.reactivated == 0
    assert again.prolocalisations.deactivated == 0
    # Not a single row version rewritten, and the lineage still names the first run.
    assert after == before and reruns == 0


def test_duplicate_sirets_keep_the_latest_version(reference, tmp_path):
    rows = [
        _stock_row("12345678", "0001", name="NOUVEAU NOM", treated="2024-03-10T08:00:00"),
        _stock_row("12345678", "0001", name="ANCIEN NOM", treated="2024-03-01T08:00:00"),
        _stock_row("23456789", "0001", name="PREMIER", treated="2024-03-05T08:00:00"),
        _stock_row("23456789", "0001", name="SECOND", treated="2024-03-05T08:00:00"),
        _stock_row("34567890", "0001", name="FERME", treated="2024-03-02T08:00:00", etat="A"),
        _stock_row("34567890", "0001", name="FERME", treated="2024-03-09T08:00:00", etat="F"),
    ]
    path, ul = tmp_path / "dups.csv", tmp_path / "ul.csv"
    write_sample_stock(path, rows, unites_legales_path=ul)
    results = stock_runs.apply_file(reference, path, ul)
    result = stock_runs.total(results.values())
    with psycopg.connect(reference) as conn:
        stored = conn.execute(
            "SELECT siret, nom, date_dernier_traitement::text, is_active FROM enterprise_entreprise ORDER BY siret"
        ).fetchall()
        pl = conn.execute("SELECT count(*) FROM enterprise_prolocalisation WHERE is_active").fetchone()[0]
    assert list(results) == ["69"]
    assert result.records == 6 and result.duplicates == 3
    assert result.entreprises.inserted == 3 and result.rejected == 0
    assert stored == [
        (_siret("12345678", "0001")[1], "NOUVEAU NOM", "2024-03-10 08:00:00", True),
        (_siret("23456789", "0001")[1], "PREMIER", "2024-03-05 08:00:00", True),
        (_siret("34567890", "0001")[1], "FERME", "2024-03-09 08:00:00", False),
    ]
    assert pl == 2  # the closed establishment gets none


def test_a_later_older_stock_never_overwrites_newer_rows(reference, tmp_path):
    newer = [_stock_row("45678901", "0001", name="ELEC LYON", treated="2024-06-01T00:00:00", naf="43.21A")]
    older = [_stock_row("45678901", "0001", name="ELEC LYON", treated="2024-01-01T00:00:00", naf="96.02A")]
    write_sample_stock(tmp_path / "new.csv", newer, unites_legales_path=tmp_path / "ul_new.csv")
    write_sample_stock(tmp_path / "old.csv", older, unites_legales_path=tmp_path / "ul_old.csv")
    stock_runs.apply_file(reference, tmp_path / "new.csv", tmp_path / "ul_new.csv")
    result = stock_runs.total(
        stock_runs.apply_file(reference, tmp_path / "old.csv", tmp_path / "ul_old.csv").values()
    )
    with psycopg.connect(reference) as conn:
        stored = conn.execute("SELECT naf_code FROM enterprise_entreprise").fetchone()[0]
    assert (result.records, result.entreprises.stale, result.entreprises.changed) == (1, 1, 0)
    assert stored == "43.21A"


@pytest.mark.slow
def test_interrupted_load_keeps_whole_partitions_and_a_rerun_converges(reference, new_database, tmp_path):
    """A crash midway through a partition rolls all of it back (nothing half-applied, no
    establishment without its ProLocalisations); the partitions before it stay, and applying
    them all again ends where a load without a crash ends."""
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 2000, unites_legales_path=ul, seed=21)
    staged = stock_runs.stage_file(reference, path, ul)
    partitions = sorted(staged.rows_by_partition)
    crashed = max(partitions, key=lambda p: staged.rows_by_partition[p])
    before_crash = partitions[: partitions.index(crashed)]
    assert before_crash and staged.rows_by_partition[crashed] > 100

    class Crash(Exception):
        pass

    seen = []

    def crash_midway(partition, result):
        if partition == crashed:
            seen.append(result.batches)
            if result.batches == 2:
                raise Crash

    with pytest.raises(Crash):
        stock_runs.apply_partitions(reference, partitions, chunk_rows=50, on_batch=crash_midway)
    assert seen == [1, 2]
    with psycopg.connect(reference) as conn:
        by_partition = dict(conn.execute(
            "SELECT last_partition, count(*) FROM enterprise_entreprise GROUP BY 1"
        ).fetchall())
    total = sum(by_partition.values())
    assert total > 0 and set(by_partition) <= {f"stock:{p}" for p in before_crash}
    assert _count(reference, ORPHANS) == 0

    resumed = stock_runs.apply_partitions(reference, partitions, chunk_rows=50)
    assert sum(resumed[p].entreprises.unchanged for p in before_crash) == total
    assert sum(resumed[p].entreprises.changed for p in before_crash) == 0
    with psycopg.connect(reference) as conn:
        final = stock_runs.directory(conn)
    final_pl = _count(reference, "SELECT count(*) FROM enterprise_prolocalisation WHERE is_active")
    assert _count(reference, ORPHANS) == 0

    clean_url = new_database()
    load_reference(clean_url)
    stock_runs.apply_file(clean_url, path, ul)
    with psycopg.connect(clean_url) as conn:
        assert stock_runs.directory(conn) == final
    assert _count(clean_url, "SELECT count(*) FROM enterprise_prolocalisation WHERE is_active") == final_pl


def test_a_stock_whose_legal_units_name_nobody_is_held_back(reference, tmp_path):
    """Every row rejected for lack of a name, counted by the partition's audit, and nothing
    of any partition published."""
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 300, unites_legales_path=ul, seed=2)
    with ul.open(encoding="utf-8", newline="") as f:
        header, *units = list(csv.reader(f))
    with ul.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [header, *([u[0]] + [""] * (len(header) - 1) for u in units)]
        )
    staged = stock_runs.stage_file(reference, path, ul)
    assert staged.unmatched_sirens == 0
    unusable = 0
    for partition in sorted(staged.rows_by_partition):
        with pytest.raises(PublicationHeld) as held:
            stock_runs.apply_partitions(reference, [partition])
        (usable,) = [o for o in held.value.failed if o.name == "records_usable"]
        assert usable.metadata["records"] == staged.rows_by_partition[partition]
        unusable += usable.metadata["offending"]
    assert unusable > 250
    assert _count(reference, "SELECT count(*) FROM enterprise_entreprise") == 0
    assert _count(reference, "SELECT count(*) FROM enterprise_prolocalisation") == 0


@pytest.mark.slow
def test_memory_stays_bounded_while_streaming(reference, tmp_path):
    """A partition's Python memory peaks at a batch or two, far below its rows held whole."""
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 50_000, unites_legales_path=ul, seed=17)
    staged = stock_runs.stage_file(reference, path, ul)
    partition = max(staged.rows_by_partition, key=lambda p: staged.rows_by_partition[p])
    rows = staged.rows_by_partition[partition]
    # What one mapped row costs as Python objects, measured on a first batch of the partition.
    with psycopg.connect(reference) as conn:
        first = next(partition_tables(conn, partition, chunk_rows=2_000))
    tracemalloc.start()
    try:
        held = table_rows(map_table(first)[0])
        per_row = tracemalloc.get_traced_memory()[0] / len(held)
    finally:
        tracemalloc.stop()
    del held, first
    tracemalloc.start()
    try:
        (result,) = stock_runs.apply_partitions(reference, [partition], chunk_rows=500).values()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.records == rows > 5_000
    assert result.batches == -(-rows // 500)
    whole = per_row * rows
    assert per_row > 300
    assert peak < whole / 5, (peak, whole)


def test_a_partition_is_a_table_of_its_own_with_its_names(reference, tmp_path):
    """The rows still to apply carry their legal units' names and lie in their partition's
    own table: a partition is read whole from it, with no join, sorted by SIRET."""
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 2_000, unites_legales_path=ul, seed=11)
    staged = stock_runs.stage_file(reference, path, ul)
    with psycopg.connect(reference) as conn:
        placed = conn.execute(
            "SELECT p.tableoid::regclass::text, p.departement, "
            "pg_get_expr(c.relpartbound, c.oid) FROM sirene_stock.pending p JOIN pg_class c ON c.oid = p.tableoid"
        ).fetchall()
        named = conn.execute(
            'SELECT count(*) FILTER (WHERE p."denominationUniteLegale" IS NOT DISTINCT FROM '
            'u."denominationUniteLegale" AND p."nomUniteLegale" IS NOT DISTINCT FROM u."nomUniteLegale") '
            "FROM sirene_stock.pending p JOIN sirene_stock.unite_legale u ON u.siren = p.siren"
        ).fetchone()[0]
        partition = max(staged.pending_by_partition, key=staged.pending_by_partition.__getitem__)
        read = [s for t in partition_tables(conn, partition, chunk_rows=50) for s in t.column("siret").to_pylist()]
    assert len(placed) == sum(staged.pending_by_partition.values()) == 2_000
    # Each row in the table of its département's partition, one table per département.
    assert all(bound == f"FOR VALUES IN ('{departement}')" for _, departement, bound in placed)
    tables = {departement: table for table, departement, _ in placed}
    assert len(tables) > 10 and len(set(tables.values())) == len(tables)
    assert named == 2_000
    assert len(read) == staged.pending_by_partition[partition] and read == sorted(read)


def test_a_staging_of_an_earlier_version_asks_to_be_staged_again(reference, tmp_path):
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 300, unites_legales_path=ul, seed=12)
    staged = stock_runs.stage_file(reference, path, ul)
    partition = next(iter(staged.rows_by_partition))
    with psycopg.connect(reference) as conn:
        # What an earlier version staged: the establishments' own columns, no names.
        conn.execute("DROP TABLE sirene_stock.pending")
        conn.execute("CREATE TABLE sirene_stock.pending AS SELECT * FROM sirene_stock.etablissement")
        conn.commit()
        with pytest.raises(StockFileError, match="materialize the sirene_stock asset again"):
            next(partition_tables(conn, partition, chunk_rows=100))
    # Staged again (the same files: nothing copied), the partitions read.
    again = stock_runs.stage_file(reference, path, ul)
    assert again.already_staged
    with psycopg.connect(reference) as conn:
        rows = sum(t.num_rows for t in partition_tables(conn, partition, chunk_rows=100))
    assert rows == staged.rows_by_partition[partition]


def test_the_repeats_of_a_siret_come_in_the_order_of_the_file(reference, tmp_path, monkeypatch):
    """The file is COPYed in small blocks by two connections, whose rows interleave in the
    staged table: each repeat of a SIRET still comes after the ones above it in the file, so
    that on the same treatment date the later line wins (`latest_per_siret`)."""
    from foxreviews_pipeline.lib.sirene import stock_staging

    monkeypatch.setattr(stock_staging, "_COPY_BLOCK", 2048)
    treated = "2024-03-01T08:00:00"
    repeated = [f"{20_000_000 + i:08d}" for i in range(40)]
    rows = [_stock_row(s, "0001", name="ETS", treated=treated) | {"libelleVoieEtablissement": "PREMIERE"} for s in repeated]
    rows += [_stock_row(f"{30_000_000 + i:08d}", "0001", name="ETS", treated=treated) for i in range(300)]
    rows += [_stock_row(s, "0001", name="ETS", treated=treated) | {"libelleVoieEtablissement": "SECONDE"} for s in repeated]
    rows += [_stock_row(f"{40_000_000 + i:08d}", "0001", name="ETS", treated=treated) for i in range(300)]
    rows += [_stock_row(s, "0001", name="ETS", treated=treated) | {"libelleVoieEtablissement": "TROISIEME"} for s in repeated]
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, rows, unites_legales_path=ul)
    assert path.stat().st_size > 20 * 2048  # blocks for both connections
    stock_runs.stage_file(reference, path, ul)
    with psycopg.connect(reference) as conn:
        read = pa.concat_tables(partition_tables(conn, "69", chunk_rows=100))
    sirets = read.column("siret").to_pylist()
    voies = read.column("libelleVoieEtablissement").to_pylist()
    repeats = {siret: [v for s, v in zip(sirets, voies, strict=True) if s == siret] for siret in set(sirets)}
    listed = {siret: voie for siret, voie in repeats.items() if len(voie) > 1}
    assert len(listed) == 40
    assert all(voie == ["PREMIERE", "SECONDE", "TROISIEME"] for voie in listed.values())


def test_a_siret_listed_several_times_is_never_split_between_batches(reference, tmp_path):
    rows = [
        _stock_row(f"{10_000_000 + i:08d}", "0001", name=f"ETS {i}", treated=f"2024-03-{1 + i % 9:02d}T08:00:00")
        for i in range(9)
    ]
    # One SIRET three times, whose run starts where a batch of two would end.
    rows += [
        _stock_row("10000003", "0001", name="ETS 3", treated=f"2024-04-0{day}T08:00:00") for day in (1, 2)
    ]
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, rows, unites_legales_path=ul)
    stock_runs.stage_file(reference, path, ul)
    with psycopg.connect(reference) as conn:
        batches = [t.column("siret").to_pylist() for t in partition_tables(conn, "69", chunk_rows=2)]
    assert sorted(s for b in batches for s in b) == sorted(r["siret"] for r in rows)
    seen = [set(b) for b in batches]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
    # Every batch but the last is full, the one holding the repeated SIRET longer.
    assert all(len(b) >= 2 for b in batches[:-1]) and max(map(len, batches)) == 4


def test_an_establishment_without_a_siren_is_staged_and_read(reference, tmp_path):
    """`pending` is written by several connections, each its share of the sirens: a row with
    no siren still falls to one of them, and its partition reads it (to be rejected there)."""
    rows = [_stock_row(f"{50_000_000 + i:08d}", "0001", name=f"ETS {i}", treated="2024-03-01T08:00:00") for i in range(200)]
    rows[7] = rows[7] | {"siren": "", "siret": "", "nic": ""}
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, rows, unites_legales_path=ul)
    staged = stock_runs.stage_file(reference, path, ul)  # one in 200 with no legal unit: let through
    assert staged.pending_by_partition == {"69": 200} and staged.unmatched_sirens == 1
    with psycopg.connect(reference) as conn:
        read = pa.concat_tables(partition_tables(conn, "69", chunk_rows=64))
    sirets = read.column("siret").to_pylist()
    assert len(sirets) == 200 and sirets.count(None) == 1
