-- One row of directory-wide figures for the web app. The unique index is on a real column
-- (not an expression), which is what REFRESH MATERIALIZED VIEW CONCURRENTLY requires, so a
-- refresh never blocks readers.
CREATE MATERIALIZED VIEW ville_stats AS
SELECT
    1::integer                                   AS id,
    count(*)::integer                            AS total_villes,
    count(DISTINCT v.departement)::integer       AS total_departements,
    count(DISTINCT v.region)::integer            AS total_regions,
    coalesce(sum(v.population), 0)::bigint       AS population_totale,
    coalesce(round(avg(v.population)), 0)::integer AS population_moyenne,
    (SELECT count(*) FROM enterprise_entreprise e WHERE e.is_active)::integer
                                                 AS total_entreprises_actives,
    (SELECT count(*) FROM enterprise_prolocalisation p WHERE p.is_active)::integer
                                                 AS total_prolocalisations_actives,
    now()                                        AS refreshed_at
FROM location_ville v
WHERE v.is_active
WITH DATA;

CREATE UNIQUE INDEX ville_stats_id_idx ON ville_stats (id);
