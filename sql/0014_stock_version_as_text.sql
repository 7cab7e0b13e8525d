-- The stock's INSEE versions are compared as text (`STILL_TO_APPLY`,
-- lib/directory/stock_load.py): the stored version written as INSEE writes it, for the
-- directory's rows only. Staging no longer parses the version of every row of the file
-- (2-4 µs a row), and its function goes. CASCADE: the only objects built on it are the
-- generated `treated` column of a stock staged before this migration, which nothing reads.
DROP FUNCTION sirene_timestamp(text) CASCADE;
