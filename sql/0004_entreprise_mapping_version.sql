-- Which version of the SIRENE mapping rules produced a row. A record INSEE has not changed
-- since (same dateDernierTraitement) and mapped by the current rules needs no new mapping:
-- re-running a day then touches nothing. NULL for rows written by uploads.
ALTER TABLE enterprise_entreprise ADD COLUMN mapping_version smallint;
