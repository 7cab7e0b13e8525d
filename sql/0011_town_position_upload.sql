-- A town centre staff gave in an upload of villes (`position_source = 'upload'`): a centre
-- derived from establishments never replaces it, as it never replaces geo.api.gouv.fr's.
ALTER TABLE location_ville DROP CONSTRAINT location_ville_position_source_check;
ALTER TABLE location_ville ADD CONSTRAINT location_ville_position_source_check
    CHECK (position_source IN ('geo_api', 'establishments', 'upload'));
-- Until now an upload's centre was left without a source: those are the only centres
-- without one.
UPDATE location_ville SET position_source = 'upload'
WHERE position_source IS NULL AND lat IS NOT NULL AND lng IS NOT NULL;
