"""The change feed (docs/change-feed.md) on a real PostgreSQL: the feed a publication appends
equals the difference of the shown fields of the tables before and after it; a held-back
day, a re-run and a crash append nothing; concurrent writers never let a consumer skip a
change; listeners wake up once per publication; the CLI prints it; the cleanup purges it."""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from foxreviews_pipeline.cli import main
from foxreviews_pipeline.lib.asset_keys import ENTREPRISES, PRO_LOCALISATIONS
from foxreviews_pipeline.lib.directory.change_feed import CHANNEL, changes_since, follow
from foxreviews_pipeline.lib.directory.daily import publish_day, write_day
from foxreviews_pipeline.lib.directory.publication import publish_directory
from foxreviews_pipeline.lib.directory.ville_stats import CENTRES_PARTITION, refresh_town_centres
from foxreviews_pipeline.lib.maintenance.cleanup import RetentionPolicy, run_cleanup
from foxreviews_pipeline.lib.publish import PublicationHeld, publish
from foxreviews_pipeline.lib.reference.communes import load_aliases, load_communes
from foxreviews_pipeline.lib.reference.load import load_villes
from foxreviews_pipeline.sample.day import _mask
from foxreviews_pipeline.sample.source import sample_day_source

DAY1, DAY2, DAY3 = date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)
SIZE = 2_000
ENTREPRISE_FIELDS = (
    "nom", "nom_commercial", "adresse", "code_postal", "ville_nom", "code_commune", "naf_code",
    "is_active",
)


@pytest.fixture
def conn(reference_db: str):
    with psycopg.connect(reference_db, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def days() -> dict[date, list[dict]]:
    source = sample_day_source(SIZE)
    return {day: source(day) for day in (DAY1, DAY2)}


# -- the feed against a diff of the tables ----------------------------------------------------


def _position_columns(conn: psycopg.Connection) -> tuple[str, ...]:
    present = {
        r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'enterprise_entreprise' AND column_name IN ('sirene_lat', 'sirene_lng')"
        )
    }
    return tuple(c for c in ("sirene_lat", "sirene_lng") if c in present)


def shown(conn: psycopg.Connection) -> dict[str, dict[Any, Any]]:
    """What the web app shows of each table: the fields a change is about."""
    fields = (*ENTREPRISE_FIELDS, *_position_columns(conn))
    entreprises = {
        row[0]: dict(zip(fields, row[1:], strict=True))
        for row in conn.execute(f"SELECT siret, {', '.join(fields)} FROM enterprise_entreprise")
    }
    pages = {
        f"{siret}/{slug}/{code}": active
        for siret, slug, code, active in conn.execute(
            """
            SELECT e.siret, s.slug, v.code_insee, p.is_active FROM enterprise_prolocalisation p
            JOIN enterprise_entreprise e ON e.id = p.entreprise_id
            JOIN subcategory_souscategorie s ON s.id = p.sous_categorie_id
            JOIN location_ville v ON v.id = p.ville_id
            """
        )
    }
    return {"entreprise": entreprises, "prolocalisation": pages}


def _op(was: bool, now: bool) -> str:
    return "retired" if was and not now else "reactivated" if now and not was else "updated"


def expected_changes(before: dict, after: dict) -> Counter:
    """(entity, business key, op, fields changed) for every difference of the shown fields."""
    found: Counter = Counter()
    for siret, now in after["entreprise"].items():
        was = before["entreprise"].get(siret)
        if was is None:
            found["entreprise", siret, "created", frozenset()] += 1
            continue
        changed = frozenset(f for f in now if was[f] != now[f])
        if changed:
            found["entreprise", siret, _op(was["is_active"], now["is_active"]), changed] += 1
    for key, active in after["prolocalisation"].items():
        was_active = before["prolocalisation"].get(key)
        if was_active is None:
            found["prolocalisation", key, "created", frozenset()] += 1
        elif was_active != active:
            found["prolocalisation", key, _op(was_active, active), frozenset()] += 1
    return found


def feed_changes(conn: psycopg.Connection, after: int) -> tuple[Counter, int]:
    """The feed after change `after`, as `expected_changes` states it, and the new cursor."""
    found: Counter = Counter()
    for change in changes_since(conn, after, limit=1_000_000):
        fields = frozenset(change.fields or ()) if change.entity == "entreprise" else frozenset()
        found[change.entity, change.business_key, change.op, fields] += 1
        after = change.id
    return found, after


def published(conn, records, day: date, run_id: str = "run-1"):
    before = shown(conn)
    result = publish_day(conn, records, partition=day.isoformat(), run_id=run_id)
    return before, shown(conn), result


def _last_id(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM directory_change").fetchone()[0]


def test_the_feed_equals_the_diff_of_days_with_creations_updates_and_closures(conn, days):
    cursor = 0
    for n, day in enumerate((DAY1, DAY2)):
        before, after, result = published(conn, days[day], day)
        found, cursor = feed_changes(conn, cursor)
        assert found == expected_changes(before, after)
        ops = Counter((entity, op) for entity, _, op, _ in found.elements())
        assert ops["entreprise", "created"] == result.result.entreprises.inserted > 0
        assert ops["prolocalisation", "created"] == result.result.prolocalisations.created > 0
        # The materialization's counts are the feed's, by entity and operation.
        counted = {e: dict(o) for e, o in result.result.figures()[ENTREPRISES]["changes"].items()}
        assert counted == {
            entity: {op: ops[entity, op] for (e, op) in ops if e == entity}
            for entity in {e for e, _ in ops}
        }
        assert result.result.figures()[PRO_LOCALISATIONS]["changes"] == counted
        if n == 1:  # day two updates and closes establishments seen on day one
            assert ops["entreprise", "updated"] > 0
            assert ops["entreprise", "retired"] > 0 and ops["prolocalisation", "retired"] > 0
    rows = conn.execute(
        "SELECT DISTINCT partition, run_id FROM directory_changes_since(0, 1000000) ORDER BY 1"
    ).fetchall()
    assert rows == [(DAY1.isoformat(), "run-1"), (DAY2.isoformat(), "run-1")]
    # A bookkeeping change alone is not a change.
    assert not conn.execute(
        "SELECT count(*) FROM directory_change WHERE fields ?| array['date_dernier_traitement', "
        "'last_partition', 'last_run_id', 'updated_at', 'mapping_version']"
    ).fetchone()[0]


def test_a_rerun_appends_nothing_and_a_held_back_day_appends_nothing(conn, days):
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    last = _last_id(conn)
    again = publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-2")
    assert _last_id(conn) == last and again.changes == {} and again.result.changes == {}

    broken = copy.deepcopy(days[DAY2])
    for record in broken:
        record["adresseEtablissement"]["codeCommuneEtablissement"] = "00000"
    before = shown(conn)
    with pytest.raises(PublicationHeld):
        publish_day(conn, broken, partition=DAY2.isoformat(), run_id="run-3")
    assert _last_id(conn) == last and shown(conn) == before
    assert conn.execute("SELECT count(*) FROM directory_publication WHERE run_id = 'run-3'").fetchone() == (0,)


def test_a_crash_mid_publish_leaves_neither_rows_nor_changes(conn, days):
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    before, last = shown(conn), _last_id(conn)

    def crashing(c: psycopg.Connection):
        write_day(c, days[DAY2], partition=DAY2.isoformat(), run_id="run-2")
        assert c.execute(
            "SELECT count(*) FROM directory_change WHERE publication_id = directory_change_publication()"
        ).fetchone()[0]
        raise RuntimeError("killed mid-publish")

    with pytest.raises(RuntimeError, match="killed"):
        publish_directory(conn, crashing, partition=DAY2.isoformat(), run_id="run-2")
    assert shown(conn) == before and _last_id(conn) == last


def _with_page(conn: psycopg.Connection, records: list[dict], *, person: bool) -> dict:
    """A day-one record of an establishment with an active page (a natural person's, or not)."""
    by_siret = {r["siret"]: r for r in records}
    for (siret,) in conn.execute(
        "SELECT e.siret FROM enterprise_prolocalisation p "
        "JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
        "WHERE p.is_active AND e.statut_diffusion = 'O' AND e.adresse IS NOT NULL ORDER BY e.siret"
    ).fetchall():
        record = by_siret.get(siret)
        if record and (record["uniteLegale"]["categorieJuridiqueUniteLegale"] == "1000") == person:
            return copy.deepcopy(record)
    raise AssertionError("no such record in the sample")


def _treated_on(record: dict, day: date) -> dict:
    record["dateDernierTraitementEtablissement"] = f"{day.isoformat()}T05:00:00.000"
    return record


def _page_ops(found: Counter, siret: str) -> list[str]:
    return sorted(op for entity, key, op, _ in found.elements()
                  if entity == "prolocalisation" and key.startswith(siret + "/"))


def test_a_move_from_o_to_p_masks_name_and_street_and_retires_the_pages(conn, days):
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    cursor = _last_id(conn)
    record = _treated_on(_with_page(conn, days[DAY1], person=True), DAY2)
    record["statutDiffusionEtablissement"] = "P"
    _mask(record)
    siret = record["siret"]

    before, after, _ = published(conn, [record], DAY2)
    found, _ = feed_changes(conn, cursor)
    assert found == expected_changes(before, after)
    (entreprise,) = [c for c in found if c[0] == "entreprise"]
    assert entreprise[1:3] == (siret, "updated") and {"nom", "adresse"} <= entreprise[3]
    assert _page_ops(found, siret) == ["retired"]
    (fields,) = conn.execute(
        "SELECT fields FROM directory_change WHERE entity = 'entreprise' AND id > %s", (cursor,)
    ).fetchone()
    assert fields["nom"][1] is None and fields["adresse"][1] is None


def test_a_closure_then_a_reactivation(conn, days):
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    record = _treated_on(_with_page(conn, days[DAY1], person=False), DAY2)
    siret = record["siret"]
    current = record["periodesEtablissement"][0]
    closed = dict(current, dateDebut=DAY2.isoformat(), dateFin=None,
                  etatAdministratifEtablissement="F", changementEtatAdministratifEtablissement=True)
    record["periodesEtablissement"] = [closed, *record["periodesEtablissement"]]

    cursor = _last_id(conn)
    before, after, _ = published(conn, [record], DAY2)
    found, cursor = feed_changes(conn, cursor)
    assert found == expected_changes(before, after)
    assert [c[2] for c in found if c[0] == "entreprise"] == ["retired"]
    assert _page_ops(found, siret) == ["retired"]

    reopened = _treated_on(copy.deepcopy(record), DAY3)
    reopened["periodesEtablissement"] = [
        dict(closed, dateDebut=DAY3.isoformat(), etatAdministratifEtablissement="A"),
        *record["periodesEtablissement"],
    ]
    before, after, _ = published(conn, [reopened], DAY3)
    found, _ = feed_changes(conn, cursor)
    assert found == expected_changes(before, after)
    assert [c[2] for c in found if c[0] == "entreprise"] == ["reactivated"]
    assert _page_ops(found, siret) == ["reactivated"]


def test_a_write_outside_a_publish_records_nothing(conn, days):
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    last = _last_id(conn)
    # The web app's own columns, and even a shown one, written outside a publish.
    conn.execute("UPDATE enterprise_entreprise SET telephone = '0102030405', nom = nom || ' X' "
                 "WHERE id IN (SELECT id FROM enterprise_entreprise ORDER BY id LIMIT 5)")
    assert _last_id(conn) == last


def test_the_feed_never_joins_old_and_new_rows_by_nested_loop(conn):
    """A transition table is planned as one row whatever it holds: joined by nested loop,
    the old and new rows of a 35,000-row update take minutes (sql/0010_change_feed_plans.sql).
    Every update trigger joins them with nested loops off; the insert triggers join nothing
    large (a page probes its establishment by id)."""
    configs = dict(
        conn.execute(
            "SELECT DISTINCT p.proname, p.proconfig FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgname LIKE 'directory_change_%' AND NOT t.tgisinternal"
        ).fetchall()
    )
    # One function for the creations of both establishments and pages, one per table else.
    assert len(configs) == 5 and "directory_change_created" in configs
    updated = {name: config for name, config in configs.items() if name.endswith("_updated")}
    assert len(updated) == 3
    assert all(config == ["enable_nestloop=off"] for config in updated.values()), updated


def _villes(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    fields = ("nom", "slug", "code_postal_principal", "departement", "region", "lat", "lng", "is_active")
    return {
        row[0]: dict(zip(fields, row[1:], strict=True))
        for row in conn.execute(f"SELECT code_insee, {', '.join(fields)} FROM location_ville")
    }


def test_a_town_renamed_and_a_town_gone_are_in_the_feed(conn):
    communes = load_communes()
    renamed, gone = communes[10], communes[20]
    changed = [
        replace(c, nom="Nouvelle Commune") if c is renamed else c for c in communes if c is not gone
    ]
    before = _villes(conn)
    published = publish(conn, lambda c: load_villes(c, changed, load_aliases()), lambda c, r: [],
                        partition="villes", run_id="run-v")
    after = _villes(conn)
    expected = Counter(
        ("ville", code, _op(before[code]["is_active"], now["is_active"]),
         frozenset(f for f in now if before[code][f] != now[f]))
        for code, now in after.items() if now != before[code]
    )
    found = Counter(
        (c.entity, c.business_key, c.op, frozenset(c.fields or ())) for c in changes_since(conn, 0)
    )
    assert found == expected
    assert ("ville", gone.code_insee, "retired", frozenset({"is_active"})) in found
    (fields,) = conn.execute(
        "SELECT fields FROM directory_change WHERE business_key = %s", (renamed.code_insee,)
    ).fetchone()
    # The slug is reported from the one it was, not from the placeholder of the exchange.
    assert fields["slug"] == [before[renamed.code_insee]["slug"], after[renamed.code_insee]["slug"]]
    assert fields["nom"] == [renamed.nom, "Nouvelle Commune"]
    assert published.changes == {"ville": dict(Counter(op for _, _, op, _ in found))}


def test_town_centres_derived_from_the_directory_are_town_changes(conn, reference_db, days):
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    last = _last_id(conn)
    before = _villes(conn)
    refreshed = refresh_town_centres(reference_db, run_id="run-c")
    after = _villes(conn)
    moved = {code for code, now in after.items() if (now["lat"], now["lng"]) != (before[code]["lat"], before[code]["lng"])}
    assert refreshed["centres_updated"] == len(moved) > 0
    rows = conn.execute(
        "SELECT business_key, op, partition, run_id, fields FROM directory_changes_since(%s, 1000000)", (last,)
    ).fetchall()
    assert {r[0] for r in rows} == moved
    assert {(r[1], r[2], r[3]) for r in rows} == {("updated", CENTRES_PARTITION, "run-c")}
    assert all(set(r[4]) == {"lat", "lng"} for r in rows)
    assert refreshed["changes"] == {"ville": {"updated": len(moved)}}
    # Nothing moved since: a second refresh appends nothing.
    assert refresh_town_centres(reference_db, run_id="run-d")["changes"] == {}
    assert conn.execute("SELECT count(*) FROM directory_publication WHERE run_id = 'run-d'").fetchone() == (0,)


# -- the stock's first load: one snapshot marker -----------------------------------------------


def test_a_first_load_is_one_snapshot_marker_and_later_loads_are_recorded(conn, days):
    partition = "stock:75"

    def load(records):
        return publish_directory(
            conn, lambda c: write_day(c, records, partition=partition, run_id="stock-run"),
            partition=partition, run_id="stock-run", snapshot_if_first_load=True,
        )

    first = load(days[DAY1])
    rows = conn.execute(
        "SELECT entity, op, partition, business_key FROM directory_changes_since(0, 1000000)"
    ).fetchall()
    assert rows == [("directory", "snapshot", partition, partition)]
    assert first.result.changes == {"directory": {"snapshot": 1}}
    # The marker's rule: every row the snapshot stands for carries its partition.
    assert conn.execute(
        "SELECT count(*) FROM enterprise_entreprise WHERE last_partition = %s", (partition,)
    ).fetchone()[0] == first.result.entreprises.inserted

    cursor = _last_id(conn)
    before = shown(conn)
    load(days[DAY2])
    found, _ = feed_changes(conn, cursor)
    assert found == expected_changes(before, shown(conn)) and found


# -- safe to follow: two concurrent writers -------------------------------------------------


def _append(writer: psycopg.Connection, key: str) -> int:
    return writer.execute(
        "WITH p AS (INSERT INTO directory_publication DEFAULT VALUES RETURNING id) "
        "INSERT INTO directory_change (publication_id, entity, op, business_key) "
        "SELECT id, 'ville', 'updated', %s FROM p RETURNING id", (key,)
    ).fetchone()[0]


def _read(consumer: psycopg.Connection, after: int) -> list[tuple[int, str]]:
    return [(c.id, c.business_key) for c in changes_since(consumer, after)]


def test_a_consumer_never_advances_past_an_uncommitted_writer(database_url):
    with (
        psycopg.connect(database_url) as a,
        psycopg.connect(database_url) as b,
        psycopg.connect(database_url, autocommit=True) as consumer,
    ):
        a_ids = [_append(a, "a1"), _append(a, "a2")]  # A takes its ids first …
        b_ids = [_append(b, "b1")]
        assert max(a_ids) < min(b_ids)
        b.commit()  # … but commits after B
        assert _read(consumer, 0) == []  # not past A's ids while A may still commit
        a.commit()
        assert _read(consumer, 0) == [(a_ids[0], "a1"), (a_ids[1], "a2"), (b_ids[0], "b1")]


def test_a_consumer_never_skips_the_ids_of_a_younger_transaction(database_url):
    """The case an id order alone gets wrong: B's transaction is older, A takes ids before B
    and commits after it. The feed's order (transaction, then id) returns B's change first,
    and A's, with a smaller id, after it: a consumer resuming from B's id still gets it."""
    with (
        psycopg.connect(database_url) as a,
        psycopg.connect(database_url) as b,
        psycopg.connect(database_url, autocommit=True) as consumer,
    ):
        b.execute("SELECT pg_current_xact_id()")  # B's transaction starts (is older) first
        a_id = _append(a, "a")
        b_id = _append(b, "b")
        assert a_id < b_id
        b.commit()
        assert _read(consumer, 0) == [(b_id, "b")]
        a.commit()
        assert _read(consumer, b_id) == [(a_id, "a")]
        assert _read(consumer, 0) == [(b_id, "b"), (a_id, "a")]


def test_a_position_the_retention_purged_is_refused(database_url):
    with (
        psycopg.connect(database_url, autocommit=True) as consumer,
        pytest.raises(psycopg.errors.NoDataFound, match="not in the feed"),
    ):
        changes_since(consumer, 12345)


# -- listeners ------------------------------------------------------------------------------


def test_a_listener_is_woken_once_per_publication(conn, reference_db, days):
    with psycopg.connect(reference_db, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
        publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-2")  # no change
        got = list(listener.notifies(timeout=2.0))
    assert len(got) == 1 and got[0].channel == CHANNEL
    payload = json.loads(got[0].payload)
    assert payload["partition"] == DAY1.isoformat()
    assert payload["changes"] == conn.execute("SELECT count(*) FROM directory_change").fetchone()[0]


def test_a_held_back_publication_wakes_nobody(conn, reference_db, days):
    broken = copy.deepcopy(days[DAY1])
    for record in broken:
        record["adresseEtablissement"]["codeCommuneEtablissement"] = "00000"
    with psycopg.connect(reference_db, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        with pytest.raises(PublicationHeld):
            publish_day(conn, broken, partition=DAY1.isoformat(), run_id="run-1")
        assert list(listener.notifies(timeout=0.5)) == []


# -- the CLI --------------------------------------------------------------------------------


def test_the_cli_prints_the_feed(conn, days, reference_db, monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("FOXREVIEWS_DATABASE_URL", reference_db)
    monkeypatch.setenv("FOXREVIEWS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FOXREVIEWS_UPLOAD_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("FOXREVIEWS_SIRENE_SOURCE", "sample")
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    feed = changes_since(conn, 0, limit=1_000_000)

    assert main(["changes", "--since", "0", "--json", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["id"] for o in objects] == [c.id for c in feed[:5]]
    assert {"id", "entity", "op", "siret", "partition", "fields"} <= set(objects[0])
    assert objects[0]["partition"] == DAY1.isoformat()

    assert main(["changes", "--since", str(feed[2].id), "--entity", "prolocalisation"]) == 0
    plain = capsys.readouterr().out.splitlines()
    pages = [c for c in feed[3:] if c.entity == "prolocalisation"]
    assert [line.split("\t")[:3] for line in plain] == [
        [str(c.id), "prolocalisation", "created"] for c in pages
    ]

    assert main(["changes", "--since", "999999999"]) == 1
    assert "not in the feed" in capsys.readouterr().err


def test_following_one_entity_reads_whole_batches(conn, days):
    """A few changes of one entity behind many of another: read a batch at a time, not as
    many at a time as the limit asks for."""
    publish_day(conn, days[DAY1], partition=DAY1.isoformat(), run_id="run-1")
    calls = []

    class Counting:
        def execute(self, query, params):
            calls.append(params)
            return conn.execute(query, params)

    feed = changes_since(conn, 0, limit=1_000_000)
    pages = [c for c in feed if c.entity == "prolocalisation"]
    before_first_page = feed.index(pages[0])
    assert before_first_page > 100  # the day's establishments come first
    got = list(follow(Counting(), 0, limit=2, entity="prolocalisation", batch=100))  # type: ignore[arg-type]
    assert [c.id for c in got] == [c.id for c in pages[:2]]
    # Every call asked for a whole batch, and they stopped at the batch holding the second page.
    assert {size for _, size in calls} == {100}
    assert len(calls) == feed.index(pages[1]) // 100 + 1


# -- retention ------------------------------------------------------------------------------


def test_the_cleanup_purges_old_changes_a_dry_run_only_counts(conn, tmp_path: Path):
    for key, age in (("old-1", 40), ("old-2", 35), ("recent", 3), ("newest-but-old", 50)):
        conn.execute(
            "WITH p AS (INSERT INTO directory_publication (created_at) "
            "VALUES (now() - make_interval(days => %s)) RETURNING id) "
            "INSERT INTO directory_change (publication_id, entity, op, business_key) "
            "SELECT id, 'ville', 'updated', %s FROM p", (age, key),
        )
    now = datetime.now(UTC)
    policy = RetentionPolicy(change_days=30)
    kwargs = {"upload_root": tmp_path / "u", "landing_root": tmp_path / "l", "policy": policy, "now": now}
    dry = run_cleanup(conn, dry_run=True, **kwargs)
    # The newest change of the feed is kept whatever its age: a consumer resumes from it.
    assert dry.change_rows_deleted == 2 and dry.counts()["change_rows_deleted"] == 2
    assert conn.execute("SELECT count(*) FROM directory_change").fetchone() == (4,)
    done = run_cleanup(conn, **kwargs)
    assert done.change_rows_deleted == 2
    assert [r[0] for r in conn.execute("SELECT business_key FROM directory_change ORDER BY id")] == [
        "recent", "newest-but-old",
    ]
    with pytest.raises(ValueError, match="change_days"):
        RetentionPolicy(change_days=0)


# -- the changes recorded before publications were stored once --------------------------------


def test_changes_recorded_before_0012_keep_their_order_run_and_partition(new_database, tmp_path: Path):
    from foxreviews_pipeline.lib.db.migrations import SQL_DIR, migrate

    url = new_database(migrated=False)
    for path in SQL_DIR.iterdir():
        if path.name.endswith(".sql") and path.name < "0012":
            (tmp_path / path.name).write_text(path.read_text())
    migrate(url, tmp_path)
    old = "INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op) VALUES "
    with psycopg.connect(url) as first, psycopg.connect(url) as second:
        first.execute(old + "('run-a', '2026-11-19', 'entreprise', 7, '1', '1', 'created')")
        second.execute(old + "('run-b', 'stock:75', 'prolocalisation', 8, '2', '2/plombier/75056', 'created')")
        first.execute(old + "('run-a', '2026-11-19', 'entreprise', 9, '3', '3', 'created')")
        first.commit()
        second.commit()
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT entity_id, run_id, partition, business_key FROM directory_changes_since(0, 10)"
        ).fetchall()
        assert rows == [
            (7, "run-a", "2026-11-19", "1"), (9, "run-a", "2026-11-19", "3"),
            (8, "run-b", "stock:75", "2/plombier/75056"),
        ]
        assert conn.execute("SELECT count(*) FROM directory_publication").fetchone() == (2,)
