-- NAF 2025 (docs/data-model.md, "NAF 2025"): from 2027-01-01 INSEE states the principal
-- activity in NAF 2025. A record is mapped through the nomenclature it states, and a
-- nomenclature switch alone never changes a trade.

-- The rév. 2 code an establishment had when its activity switched to NAF 2025 with no other
-- change (its NAF 2025 code the one paired with it). Set only on NAF 2025 rows; the trade
-- stays the one that code maps to.
ALTER TABLE enterprise_entreprise ADD COLUMN naf_rev2_code text;

-- INSEE's correspondence table NAF rév. 2 → NAF 2025 (one-to-many).
CREATE TABLE ref_naf_correspondence (
    naf_rev2    text NOT NULL,
    naf2025     text NOT NULL,
    PRIMARY KEY (naf_rev2, naf2025)
);
CREATE INDEX ref_naf_correspondence_naf2025_idx ON ref_naf_correspondence (naf2025);

-- Why a code maps where it does: `reviewed` (naf_mapping.csv), `evidence` (the directory's
-- establishments that carry both codes agree), `correspondence` (every rév. 2 code INSEE
-- pairs with it maps the same way). `evidence` holds the counts behind the decision.
ALTER TABLE ref_naf_mapping
    ADD COLUMN basis text NOT NULL DEFAULT 'reviewed'
        CHECK (basis IN ('reviewed', 'evidence', 'correspondence')),
    ADD COLUMN evidence jsonb;

-- NAF 2025 codes left for a person to decide, with the counts that split them.
CREATE TABLE ref_naf_review (
    nomenclature    text NOT NULL,
    naf_code        text NOT NULL,
    establishments  integer NOT NULL,
    evidence        jsonb NOT NULL,
    reason          text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (nomenclature, naf_code)
);
