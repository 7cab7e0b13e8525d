-- The diffusion policy (docs/data-model.md, "Diffusion"): an establishment whose
-- statutDiffusionEtablissement is not 'O' keeps only its identifiers, activity, commune,
-- dates and state. A partially diffusible one ('P') has its masked fields NULL, its name
-- included when INSEE masked it. Such rows have no name to store.
ALTER TABLE enterprise_entreprise ALTER COLUMN nom DROP NOT NULL;
ALTER TABLE enterprise_entreprise
    ADD CONSTRAINT enterprise_entreprise_nom_if_diffusible
    CHECK (nom IS NOT NULL OR statut_diffusion IS DISTINCT FROM 'O');

-- Whether an establishment may have a public page: the one definition every writer and
-- every audit uses. Rows created by staff uploads carry no SIRENE status and are published
-- by the staff who uploaded them.
CREATE FUNCTION entreprise_publishable(statut_diffusion text, nom text, source text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN statut_diffusion = 'O' THEN true
        WHEN statut_diffusion = 'P' THEN nom IS NOT NULL
        WHEN statut_diffusion IS NULL THEN source = 'upload'
        ELSE false
    END
$$;

-- Rows stored before the policy: clear what a non-diffusible establishment may not show,
-- and retire the pages of every establishment that may not be published.
UPDATE enterprise_entreprise
SET nom = NULL, nom_commercial = NULL, adresse = NULL, code_postal = NULL,
    tranche_effectifs = NULL, mapping_version = NULL, updated_at = now()
WHERE statut_diffusion IS DISTINCT FROM 'O' AND statut_diffusion IS DISTINCT FROM 'P'
  AND source = 'sirene';

UPDATE enterprise_prolocalisation p
SET is_active = false, deactivated_at = now(), updated_at = now(),
    deactivation_reason = 'not_diffusible'
FROM enterprise_entreprise e
WHERE e.id = p.entreprise_id AND p.is_active
  AND NOT entreprise_publishable(e.statut_diffusion, e.nom, e.source);
