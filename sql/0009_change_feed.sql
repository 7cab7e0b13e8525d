-- The change feed (docs/change-feed.md): a transactional outbox the web app follows.
--
-- Every publish (`lib/publish.py`) marks its transaction with transaction-local settings
-- (`foxreviews.change_feed` = 'on' or 'snapshot', `foxreviews.run_id`,
-- `foxreviews.partition`); statement-level triggers on the three tables the web app shows
-- append one row per changed entity, in that same transaction. A write made outside a
-- publish (the web app's own columns, psql, a migration) carries no mark and appends
-- nothing. A change is a change of a field the web app shows: bookkeeping columns
-- (date_dernier_traitement, last_partition, last_run_id, updated_at, mapping_version, …)
-- alone are not one.

CREATE TABLE directory_change (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction: the feed's order is (xid, id), and a reader only sees the
    -- transactions older than its snapshot's xmin (`directory_changes_since`).
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    run_id        text,
    partition     text,      -- the SIRENE day, `stock:<partition>`, or the upload
    entity        text NOT NULL CHECK (entity IN ('entreprise', 'prolocalisation', 'ville', 'directory')),
    entity_id     bigint,
    siret         text,      -- the establishment's SIRET (an establishment or one of its pages)
    -- The SIRET; for a page SIRET/sous_categorie slug/ville INSEE code; for a ville its INSEE code.
    business_key  text,
    op            text NOT NULL CHECK (op IN ('created', 'updated', 'retired', 'reactivated', 'snapshot')),
    -- field → [old, new], for an update (and the state change of a retirement/reactivation).
    fields        jsonb
);
CREATE INDEX directory_change_xid_idx ON directory_change (xid, id);

-- Whether this transaction is a publish that records its changes one by one.
CREATE FUNCTION directory_change_recording() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT current_setting('foxreviews.change_feed', true) = 'on' $$;

-- The fields of two versions that differ, as field → [old, new]; NULL when none does.
CREATE FUNCTION directory_change_fields(pairs jsonb[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_object_agg(p ->> 0, jsonb_build_array(p -> 1, p -> 2))
    FROM unnest(pairs) AS p
    WHERE (p -> 1) IS DISTINCT FROM (p -> 2)
$$;

-- A ville's slug, the placeholder `moving-<id>-<slug>` of a slug exchange
-- (lib/reference/load.py) read as the slug it stands for.
CREATE FUNCTION directory_change_ville_slug(slug text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT regexp_replace(slug, '^moving-[0-9]+-', '') $$;

CREATE FUNCTION directory_change_op(was_active boolean, is_active boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN was_active AND NOT is_active THEN 'retired'
                WHEN NOT was_active AND is_active THEN 'reactivated'
                ELSE 'updated' END
$$;

-- enterprise_entreprise ---------------------------------------------------------------

CREATE FUNCTION directory_change_entreprise_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op)
        SELECT run, coalesce(part, n.last_partition),
               'entreprise', n.id, n.siret, n.siret, 'created'
        FROM directory_change_new n;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION directory_change_entreprise_updated() RETURNS trigger
-- The transition tables have no statistics and PL/pgSQL keeps a plan across calls: a plan
-- made for a few rows would compare every old row with every new one. A hash join is
-- right for any size.
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op, fields)
        SELECT run, coalesce(part, d.last_partition),
               'entreprise', d.id, d.siret, d.siret, directory_change_op(d.was_active, d.is_active),
               d.fields
        FROM (
            SELECT n.id, n.siret, n.last_partition, o.is_active AS was_active, n.is_active,
                   directory_change_fields(ARRAY[
                       jsonb_build_array('nom', o.nom, n.nom),
                       jsonb_build_array('nom_commercial', o.nom_commercial, n.nom_commercial),
                       jsonb_build_array('adresse', o.adresse, n.adresse),
                       jsonb_build_array('code_postal', o.code_postal, n.code_postal),
                       jsonb_build_array('ville_nom', o.ville_nom, n.ville_nom),
                       jsonb_build_array('code_commune', o.code_commune, n.code_commune),
                       jsonb_build_array('naf_code', o.naf_code, n.naf_code),
                       jsonb_build_array('is_active', o.is_active, n.is_active),
                       -- The position, when the schema has one (sql/0008_geography.sql).
                       jsonb_build_array('sirene_lat', to_jsonb(o) -> 'sirene_lat', to_jsonb(n) -> 'sirene_lat'),
                       jsonb_build_array('sirene_lng', to_jsonb(o) -> 'sirene_lng', to_jsonb(n) -> 'sirene_lng')
                   ]) AS fields
            FROM directory_change_old o JOIN directory_change_new n ON n.id = o.id
        ) d
        WHERE d.fields IS NOT NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER directory_change_inserted AFTER INSERT ON enterprise_entreprise
    REFERENCING NEW TABLE AS directory_change_new
    FOR EACH STATEMENT EXECUTE FUNCTION directory_change_entreprise_inserted();
CREATE TRIGGER directory_change_updated AFTER UPDATE ON enterprise_entreprise
    REFERENCING OLD TABLE AS directory_change_old NEW TABLE AS directory_change_new
    FOR EACH STATEMENT EXECUTE FUNCTION directory_change_entreprise_updated();

-- enterprise_prolocalisation (a page: establishment × trade × town) ----------------------

CREATE FUNCTION directory_change_prolocalisation_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op)
        SELECT run, coalesce(part, n.last_partition),
               'prolocalisation', n.id, e.siret,
               e.siret || '/' || s.slug || '/' || v.code_insee, 'created'
        FROM directory_change_new n
        JOIN enterprise_entreprise e ON e.id = n.entreprise_id
        JOIN subcategory_souscategorie s ON s.id = n.sous_categorie_id
        JOIN location_ville v ON v.id = n.ville_id;
    END IF;
    RETURN NULL;
END $$;

-- A page's shown state is whether it is active: its establishment, trade and town are its key.
CREATE FUNCTION directory_change_prolocalisation_updated() RETURNS trigger
-- The transition tables have no statistics and PL/pgSQL keeps a plan across calls: a plan
-- made for a few rows would compare every old row with every new one. A hash join is
-- right for any size.
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op, fields)
        SELECT run, coalesce(part, n.last_partition),
               'prolocalisation', n.id, e.siret,
               e.siret || '/' || s.slug || '/' || v.code_insee,
               directory_change_op(o.is_active, n.is_active),
               jsonb_build_object(
                   'is_active', jsonb_build_array(o.is_active, n.is_active),
                   'deactivation_reason', jsonb_build_array(o.deactivation_reason, n.deactivation_reason))
        FROM directory_change_old o
        JOIN directory_change_new n ON n.id = o.id AND n.is_active IS DISTINCT FROM o.is_active
        JOIN enterprise_entreprise e ON e.id = n.entreprise_id
        JOIN subcategory_souscategorie s ON s.id = n.sous_categorie_id
        JOIN location_ville v ON v.id = n.ville_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER directory_change_inserted AFTER INSERT ON enterprise_prolocalisation
    REFERENCING NEW TABLE AS directory_change_new
    FOR EACH STATEMENT EXECUTE FUNCTION directory_change_prolocalisation_inserted();
CREATE TRIGGER directory_change_updated AFTER UPDATE ON enterprise_prolocalisation
    REFERENCING OLD TABLE AS directory_change_old NEW TABLE AS directory_change_new
    FOR EACH STATEMENT EXECUTE FUNCTION directory_change_prolocalisation_updated();

-- location_ville ------------------------------------------------------------------------

CREATE FUNCTION directory_change_ville_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, business_key, op)
        SELECT run, part,
               'ville', n.id, n.code_insee, 'created'
        FROM directory_change_new n;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION directory_change_ville_updated() RETURNS trigger
-- The transition tables have no statistics and PL/pgSQL keeps a plan across calls: a plan
-- made for a few rows would compare every old row with every new one. A hash join is
-- right for any size.
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, business_key, op, fields)
        SELECT run, part,
               'ville', d.id, d.code_insee, directory_change_op(d.was_active, d.is_active), d.fields
        FROM (
            SELECT n.id, n.code_insee, o.is_active AS was_active, n.is_active,
                   directory_change_fields(ARRAY[
                       jsonb_build_array('nom', o.nom, n.nom),
                       jsonb_build_array('slug', directory_change_ville_slug(o.slug),
                                         directory_change_ville_slug(n.slug)),
                       jsonb_build_array('code_postal_principal', o.code_postal_principal,
                                         n.code_postal_principal),
                       jsonb_build_array('departement', o.departement, n.departement),
                       jsonb_build_array('region', o.region, n.region),
                       jsonb_build_array('lat', o.lat, n.lat),
                       jsonb_build_array('lng', o.lng, n.lng),
                       jsonb_build_array('is_active', o.is_active, n.is_active)
                   ]) AS fields
            FROM directory_change_old o JOIN directory_change_new n ON n.id = o.id
        ) d
        WHERE d.fields IS NOT NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER directory_change_inserted AFTER INSERT ON location_ville
    REFERENCING NEW TABLE AS directory_change_new
    FOR EACH STATEMENT EXECUTE FUNCTION directory_change_ville_inserted();
CREATE TRIGGER directory_change_updated AFTER UPDATE ON location_ville
    REFERENCING OLD TABLE AS directory_change_old NEW TABLE AS directory_change_new
    FOR EACH STATEMENT EXECUTE FUNCTION directory_change_ville_updated();

-- The consumer contract (docs/change-feed.md) ---------------------------------------------
-- The changes after change `after` (0: from the start), at most `max_rows`, in feed order:
-- by writing transaction, then id. Only transactions older than the reader's snapshot xmin
-- are returned: every one of them has ended, so no change can later appear before one
-- already returned. A consumer resumes from the id of the last change it processed.
CREATE FUNCTION directory_changes_since(after bigint, max_rows integer DEFAULT 1000)
RETURNS SETOF directory_change
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    after_xid xid8 := '0'::xid8;
BEGIN
    IF after > 0 THEN
        SELECT c.xid INTO after_xid FROM directory_change c WHERE c.id = after;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'change % is not in the feed (purged by retention?): read the tables '
                'again and follow the feed from the newest change', after
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    RETURN QUERY
        SELECT c.* FROM directory_change c
        WHERE (c.xid, c.id) > (after_xid, after)
          AND c.xid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY c.xid, c.id
        LIMIT max_rows;
END $$;
