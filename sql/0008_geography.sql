-- Geography (README, "Positions"): each establishment's WGS84 position, converted from
-- SIRENE's Lambert coordinates in the projection of its territory, and a centre for every
-- town.

-- The pipeline's own columns (the web app's are untouched): NULL when SIRENE gives no
-- usable position, when the establishment is not fully diffusible, or when the converted
-- point falls outside its département (lib/sirene/geography.py). `sirene_epsg` is the
-- projection the position was converted from.
ALTER TABLE enterprise_entreprise
    ADD COLUMN sirene_lat double precision CHECK (sirene_lat BETWEEN -90 AND 90),
    ADD COLUMN sirene_lng double precision CHECK (sirene_lng BETWEEN -180 AND 180),
    ADD COLUMN sirene_epsg integer,
    ADD CONSTRAINT enterprise_entreprise_sirene_position_whole
        CHECK ((sirene_lat IS NULL) = (sirene_lng IS NULL)
               AND (sirene_lat IS NULL) = (sirene_epsg IS NULL));

-- What the town centres are derived from (lib/directory/ville_stats.py): the active
-- positioned establishments of each commune, read from this index alone.
CREATE INDEX enterprise_entreprise_positioned_idx
    ON enterprise_entreprise (code_commune) INCLUDE (sirene_lat, sirene_lng)
    WHERE is_active AND sirene_lat IS NOT NULL;

-- Where a town's lat/lng came from: geo.api.gouv.fr (`geo_api`), the median of its
-- establishments' positions (`establishments`), or nowhere yet (NULL: no position).
ALTER TABLE location_ville
    ADD COLUMN position_source text CHECK (position_source IN ('geo_api', 'establishments'));
UPDATE location_ville SET position_source = 'geo_api' WHERE lat IS NOT NULL AND lng IS NOT NULL;
