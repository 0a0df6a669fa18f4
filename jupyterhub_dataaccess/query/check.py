"""Checking a caller's SQL before any engine sees it (sqlglot, DuckDB's dialect).

One read-only SELECT (or WITH ... SELECT, or a set operation of them); every table a dataset id
(or a CTE name in scope); no table functions, no schema-qualified names, no function outside an
allow-list. What runs is the SQL regenerated from the checked tree, never the caller's text, so a
quoted file path (`FROM 'x.csv'`, which sqlglot reads as an identifier) can only ever name a view.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

MAX_SQL_LENGTH = 64 * 1024

# Functions a query may call: computing on values, never reaching files, settings, the
# environment, the catalogue or extensions (sqlglot's names, lower case).
ALLOWED_FUNCTIONS = frozenset("""
abs acos asin atan atan2 avg bool_and bool_or case cast cbrt ceil coalesce concat concat_ws
corr cos count count_if covar_pop covar_samp date date_add date_diff date_part date_sub
date_trunc datediff day dayofweek dayofyear degrees div exp extract first floor greatest hour
if ilike in initcap last least left length like ln log log10 log2 lower lpad ltrim max md5 median
min minute mod month nullif pi position pow power quantile quantile_cont quantile_disc quarter
radians regexp_like regexp_replace regexp_extract repeat replace reverse right round rpad rtrim
second sha256 sign sin split_part sqrt starts_with stddev stddev_pop stddev_samp strftime
string_agg strpos substring sum tan timestamp_trunc to_date trim trunc try_cast upper var_pop
var_samp variance week year approx_distinct approx_count_distinct array_agg list
group_concat row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
last_value nth_value anyvalue any_value arg_max arg_min max_by min_by mode currentdate
current_date currenttimestamp current_timestamp struct_extract safedivide nvl ifnull
timestampadd timestampdiff timestamp_add timestamp_diff timestrtotime strtotime str_to_time
str_to_date unixtotime epoch epoch_ms tsordstodate tsordstotimestamp datestrtodate
timestamp_from_parts date_from_parts make_date array_size array_contains length exists
array struct
""".split())


class QueryError(ValueError):
    """A statement that is not allowed, with what to change."""


@dataclass(frozen=True)
class Checked:
    sql: str  # regenerated from the checked tree
    datasets: list[str]  # the dataset ids it reads, in order of first mention
    columns: dict[str, set[str] | None] = field(default_factory=dict)  # None: all of them


def _refused_nodes() -> tuple[type, ...]:
    import sqlglot.expressions as exp

    names = ("Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Copy", "Attach",
             "Detach", "Pragma", "Set", "Use", "Command", "Transaction", "Commit", "Rollback",
             "Into", "Placeholder", "Parameter", "Install", "Load", "Describe", "Show",
             "Summarize", "Export", "LoadData", "Analyze", "Kill", "Grant", "Revoke", "Refresh",
             "Cache", "Uncache", "TruncateTable", "Declare", "SessionParameter", "Subscript")
    return tuple(getattr(exp, n) for n in names if hasattr(exp, n) and n != "Subscript")


def check_sql(sql: str, dataset_ids: Container[str]) -> Checked:
    """Parse and check `sql`; raise QueryError saying what is not allowed. `dataset_ids` are the
    ids a table name may resolve to (the catalogue's)."""
    import sqlglot
    import sqlglot.expressions as exp
    from sqlglot.errors import ParseError, TokenError

    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("sql is required: one SELECT statement")
    if len(sql) > MAX_SQL_LENGTH:
        raise QueryError(f"sql is longer than {MAX_SQL_LENGTH} characters")
    try:
        trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
    except (ParseError, TokenError) as e:
        raise QueryError(f"the SQL does not parse: {str(e).splitlines()[0][:300]}") from None
    if len(trees) != 1:
        raise QueryError("send exactly one statement (one SELECT); found "
                         f"{len(trees)}")
    tree = trees[0]
    if not isinstance(tree, (exp.Select, exp.SetOperation)) or tree.args.get("into"):
        what = tree.this if isinstance(tree, exp.Command) else tree.key
        raise QueryError(f"only a SELECT (or WITH ... SELECT) is allowed, not "
                         f"{str(what).upper()[:40]}")
    refused = _refused_nodes()
    for node in tree.walk():
        if isinstance(node, refused):
            raise QueryError(f"{node.key.upper()} is not allowed in a query")
        if isinstance(node, exp.With) and node.args.get("recursive"):
            raise QueryError("WITH RECURSIVE is not allowed")
        if isinstance(node, exp.Func) and not isinstance(node, (exp.Connector, exp.Binary,
                                                                exp.Unary)):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name not in ALLOWED_FUNCTIONS:
                raise QueryError(f"function {name}() is not allowed in a query (files, "
                                 "settings, the environment and the catalogue are out of reach)")
    datasets: list[str] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryError("table functions are not allowed: name datasets by their id, "
                             "e.g. FROM flights or FROM \"nyc-taxi\"")
        if table.args.get("db") or table.args.get("catalog"):
            raise QueryError(f"{table.sql(dialect='duckdb')}: tables are dataset ids, without a "
                             "schema or database")
        name = table.name
        if _is_cte(table, name):
            continue
        if name not in dataset_ids:
            raise QueryError(f"unknown table {name[:100]!r}: tables are dataset ids (see "
                             "da.datasets()); files, paths and other tables cannot be read")
        if name not in datasets:
            datasets.append(name)
    if not datasets:
        raise QueryError("the query reads no dataset")
    star = any(isinstance(n, exp.Star) and not isinstance(n.parent, exp.Count)
               for n in tree.walk())
    names = {c.name.lower() for c in tree.find_all(exp.Column)}
    columns = {d: (None if star else names) for d in datasets}
    return Checked(sql=tree.sql(dialect="duckdb", comments=False), datasets=datasets,
                   columns=columns)


def _is_cte(table: object, name: str) -> bool:
    """Whether `name` at `table` names a CTE in scope: one of an enclosing WITH, defined before
    the CTE the table sits in (if any)."""
    import sqlglot.expressions as exp

    node, child = table.parent, table
    while node is not None:
        with_ = (node.args.get("with_") or node.args.get("with")
                 if isinstance(node, (exp.Select, exp.SetOperation)) else None)
        if isinstance(node, exp.With):
            with_ = node
        if with_ is not None and with_ is not child:  # (a CTE's own WITH was seen already)
            ctes = list(with_.expressions)
            inside = next((i for i, c in enumerate(ctes) if c is child), None)
            visible = ctes if inside is None else ctes[:inside]
            if any(c.alias_or_name == name for c in visible):
                return True
        node, child = node.parent, node
    return False
