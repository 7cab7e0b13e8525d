-- The change feed's trigger functions plan their statement on every call.
--
-- PL/pgSQL keeps a statement's plan across calls, made for the transition tables of the
-- first call: a plan made for three rows compares every old row with every new one when a
-- later statement changes thirty thousand. 0009 forbade nested loops in the update
-- functions instead, but that also forbids the one plan that fits a page's lookups on a
-- directory of forty million establishments (an index probe per changed page), forcing a
-- scan of the whole table for every statement that retires a page. A custom plan per call
-- is made for the transition tables' true sizes and the tables' statistics: hash joins
-- between two large transition tables, index probes into a large table, whichever fits.
ALTER FUNCTION directory_change_entreprise_updated() RESET enable_nestloop;
ALTER FUNCTION directory_change_prolocalisation_updated() RESET enable_nestloop;
ALTER FUNCTION directory_change_ville_updated() RESET enable_nestloop;

ALTER FUNCTION directory_change_entreprise_inserted() SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION directory_change_entreprise_updated() SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION directory_change_prolocalisation_inserted() SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION directory_change_prolocalisation_updated() SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION directory_change_ville_inserted() SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION directory_change_ville_updated() SET plan_cache_mode = force_custom_plan;
