"""The SQL path (POST /query, da.sql): the statement checked on its parsed tree (check.py), run
in an isolated DuckDB worker process over governed relations only (worker.py)."""
