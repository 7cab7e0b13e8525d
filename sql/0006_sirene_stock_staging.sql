-- The SIRENE stock, staged in PostgreSQL before it is applied to the directory.
--
-- `sirene_stock` holds the last staged StockEtablissement and StockUniteLegale files as
-- unlogged tables (created by the `sirene_stock` asset with the files' own columns), so
-- that the legal units are joined by the database, on disk, and each département is read
-- on its own (docs/architecture.md, "The SIRENE stock").
CREATE SCHEMA sirene_stock;

-- The stock partition of an establishment: its département from the commune code (2A/2B
-- for Corsica, three digits overseas), 'autres' when the code is absent or unknown.
-- The partition keys of the `stock_*` assets are exactly this function's values.
CREATE FUNCTION sirene_departement(code_commune text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN code_commune ~ '^(97[1-8]|98[4-9])[0-9]{2}$' THEN left(code_commune, 3)
        WHEN code_commune ~ '^2[AB][0-9]{3}$' THEN left(code_commune, 2)
        WHEN code_commune ~ '^(0[1-9]|1[0-9]|[2-8][0-9]|9[0-5])[0-9]{3}$'
             AND left(code_commune, 2) <> '20' THEN left(code_commune, 2)
        ELSE 'autres'
    END
$$;

-- INSEE's `dateDernierTraitementEtablissement` (2024-03-17T04:21:27) as a timestamp, NULL
-- when it is not such a date and time (never an error). Built with make_timestamp rather
-- than a cast, which is only STABLE: the function stays IMMUTABLE, so PostgreSQL inlines it
-- (twice as fast over a stock file).
CREATE FUNCTION sirene_timestamp(value text) RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$'
        THEN CASE  -- and the day exists in its month (no 30 February)
            WHEN substr(value, 9, 2) <= '28'
              OR substr(value, 9, 2)::int <= extract(day FROM
                     make_date(substr(value, 1, 4)::int, substr(value, 6, 2)::int, 1)
                     + interval '1 month' - interval '1 day')
            THEN make_timestamp(
                substr(value, 1, 4)::int, substr(value, 6, 2)::int, substr(value, 9, 2)::int,
                substr(value, 12, 2)::int, substr(value, 15, 2)::int,
                substr(value, 18)::double precision)
        END
    END
$$;

-- What is staged: one row, replaced by each staging.
CREATE TABLE sirene_stock.staged (
    id                   boolean PRIMARY KEY DEFAULT true CHECK (id),
    etablissement_file   text NOT NULL,
    unite_legale_file    text NOT NULL,
    fingerprint          text NOT NULL,
    etablissements       bigint NOT NULL,
    unites_legales       bigint NOT NULL,
    unmatched_sirens     bigint NOT NULL,
    rows_by_partition    jsonb NOT NULL,
    -- what the partitions still have to apply (the rest is in the directory in this version)
    pending_by_partition jsonb NOT NULL,
    staged_at            timestamptz NOT NULL DEFAULT now()
);
