-- The change feed at any directory size.
--
-- A transition table is planned as if it held one row, whatever it holds: a join of the old
-- and new rows of a statement must not be a nested loop (0009's `enable_nestloop = off`,
-- kept, and given to the page update function below too), while a page's establishment is
-- looked up by its id, one index probe per page, whatever the directory's size.

-- A page's establishment is read by its id, one index probe per page: the changed pages of
-- a statement are few against a directory of millions, and a join the planner would make
-- instead (a merge join reads the whole primary key to reach the newest ids) grows with the
-- directory. The OFFSET keeps it to one probe per page. Trades and towns are small, bounded
-- tables: joined as the planner sees fit.
CREATE OR REPLACE FUNCTION directory_change_prolocalisation_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op)
        SELECT run, coalesce(part, n.last_partition),
               'prolocalisation', n.id, k.siret, k.siret || '/' || s.slug || '/' || v.code_insee, 'created'
        FROM directory_change_new n
        CROSS JOIN LATERAL (
            SELECT (SELECT e.siret FROM enterprise_entreprise e WHERE e.id = n.entreprise_id) AS siret
            OFFSET 0
        ) k
        JOIN subcategory_souscategorie s ON s.id = n.sous_categorie_id
        JOIN location_ville v ON v.id = n.ville_id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION directory_change_prolocalisation_updated() RETURNS trigger
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    run text := nullif(current_setting('foxreviews.run_id', true), '');
    part text := nullif(current_setting('foxreviews.partition', true), '');
BEGIN
    IF directory_change_recording() THEN
        INSERT INTO directory_change (run_id, partition, entity, entity_id, siret, business_key, op, fields)
        SELECT run, coalesce(part, c.last_partition),
               'prolocalisation', c.id, k.siret, k.siret || '/' || s.slug || '/' || v.code_insee,
               directory_change_op(c.was_active, c.is_active),
               jsonb_build_object(
                   'is_active', jsonb_build_array(c.was_active, c.is_active),
                   'deactivation_reason', jsonb_build_array(c.old_reason, c.deactivation_reason))
        FROM (
            SELECT n.id, n.entreprise_id, n.sous_categorie_id, n.ville_id, n.last_partition,
                   n.is_active, n.deactivation_reason, o.is_active AS was_active,
                   o.deactivation_reason AS old_reason
            FROM directory_change_old o
            JOIN directory_change_new n ON n.id = o.id AND n.is_active IS DISTINCT FROM o.is_active
        ) c
        CROSS JOIN LATERAL (
            SELECT (SELECT e.siret FROM enterprise_entreprise e WHERE e.id = c.entreprise_id) AS siret
            OFFSET 0
        ) k
        JOIN subcategory_souscategorie s ON s.id = c.sous_categorie_id
        JOIN location_ville v ON v.id = c.ville_id;
    END IF;
    RETURN NULL;
END $$;

-- One B-tree per change instead of two: the feed is read in (xid, id) order, which becomes
-- the primary key, and a change is found by its id (a consumer's position) through a BRIN
-- index — ids grow with the table's blocks, and a BRIN costs next to nothing to keep.
ALTER TABLE directory_change DROP CONSTRAINT directory_change_pkey;
DROP INDEX directory_change_xid_idx;
ALTER TABLE directory_change ADD PRIMARY KEY (xid, id);
CREATE INDEX directory_change_id_brin ON directory_change USING brin (id);
