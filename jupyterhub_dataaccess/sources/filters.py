"""Row filters: a small, safe expression language, parsed here and compiled to pyarrow compute.

Grammar (never `eval`):
    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" expr ")" | compare
    compare := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand
                        | ["not"] "in" "(" literal ("," literal)* ")"
                        | "is" ["not"] "null")
    operand := column | literal
    column  := name | "double quoted name"
    literal := 'single quoted string' | number | true | false | null

The same language serves the catalogue's row filters and a reader's `where`. The parsed tree (the
node classes below, inside a RowFilter) is what readers receive and translate for their source;
`bind` checks it against a schema first, so a filter that cannot run fails before any data flows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<str>'(?:[^'\\]|\\.|'')*')
      | (?P<qname>"(?:[^"\\]|\\.)+")
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|,)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "true", "false", "null"}
MAX_FILTER_LENGTH = 4096


class FilterError(ValueError):
    """A row filter that does not parse."""


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Compare:
    op: str
    left: Column | Literal
    right: Column | Literal


@dataclass(frozen=True)
class InList:
    column: Column
    values: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True)
class IsNull:
    column: Column
    negate: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    part: Any


@dataclass(frozen=True)
class RowFilter:
    text: str
    tree: Any

    @property
    def columns(self) -> set[str]:
        return _columns(self.tree)

    def to_arrow(self) -> Any:
        """The filter as a pyarrow.compute Expression."""
        return _to_arrow(self.tree)

    @property
    def conjuncts(self) -> list[RowFilter]:
        """The parts of a top-level `and`, each a filter of its own (the filter itself if none)."""
        parts = self.tree.parts if isinstance(self.tree, BoolOp) and self.tree.op == "and" \
            else (self.tree,)
        if len(parts) == 1:
            return [self]
        return [RowFilter(text=_text(p), tree=p) for p in parts]


def and_filters(*filters: RowFilter | None) -> RowFilter | None:
    """All of the filters (None where there are none)."""
    parts = [p for f in filters if f is not None for p in f.conjuncts]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return RowFilter(text=" and ".join(f"({p.text})" for p in parts),
                     tree=BoolOp("and", tuple(p.tree for p in parts)))


def _text(tree: Any) -> str:
    """Filter text that parses back to `tree` (for audit records and messages)."""
    if isinstance(tree, Column):
        return '"' + tree.name.replace('"', '\\"') + '"'
    if isinstance(tree, Literal):
        return _literal_text(tree.value)
    if isinstance(tree, Compare):
        return f"{_text(tree.left)} {tree.op} {_text(tree.right)}"
    if isinstance(tree, InList):
        values = ", ".join(_literal_text(v) for v in tree.values)
        return f"{_text(tree.column)} {'not in' if tree.negate else 'in'} ({values})"
    if isinstance(tree, IsNull):
        return f"{_text(tree.column)} is {'not null' if tree.negate else 'null'}"
    if isinstance(tree, Not):
        return f"not ({_text(tree.part)})"
    return f" {tree.op} ".join(f"({_text(p)})" for p in tree.parts)


def _literal_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"unexpected character at position {pos + 1}: {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, kind: str | None = None, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        k, v = self.toks[self.i]
        return (kind is None or k == kind) and (value is None or v == value)

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        if not self.peek(kind, value):
            got = self.toks[self.i][1] if self.i < len(self.toks) else "end of filter"
            raise FilterError(f"expected {value or kind}, got {got!r}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def parse(self) -> Any:
        tree = self.expr()
        if self.i != len(self.toks):
            raise FilterError(f"unexpected {self.toks[self.i][1]!r}")
        return tree

    def expr(self) -> Any:
        parts = [self.conj()]
        while self.peek("kw", "or"):
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conj(self) -> Any:
        parts = [self.neg()]
        while self.peek("kw", "and"):
            self.take()
            parts.append(self.neg())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def neg(self) -> Any:
        if self.peek("kw", "not"):
            self.take()
            return Not(self.neg())
        if self.peek("op", "("):
            self.take()
            tree = self.expr()
            self.take("op", ")")
            return tree
        return self.compare()

    def operand(self) -> Column | Literal:
        if self.peek("name"):
            return Column(self.take())
        if self.peek("qname"):
            return Column(self.take()[1:-1].replace('\\"', '"'))
        return Literal(self.literal())

    def literal(self) -> Any:
        if self.peek("num"):
            text = self.take()
            return float(text) if any(c in text for c in ".eE") else int(text)
        if self.peek("str"):
            raw = self.take()[1:-1]
            return raw.replace("''", "'").replace("\\'", "'").replace("\\\\", "\\")
        if self.peek("kw", "true") or self.peek("kw", "false"):
            return self.take() == "true"
        if self.peek("kw", "null"):
            self.take()
            return None
        got = self.toks[self.i][1] if self.i < len(self.toks) else "end of filter"
        raise FilterError(f"expected a value, got {got!r}")

    def compare(self) -> Any:
        left = self.operand()
        if self.peek("kw", "is"):
            self.take()
            negate = bool(self.peek("kw", "not") and self.take())
            self.take("kw", "null")
            return IsNull(self._column(left), negate)
        negate = False
        if self.peek("kw", "not"):
            self.take()
            negate = True
            if not self.peek("kw", "in"):
                raise FilterError("expected 'in' after 'not'")
        if self.peek("kw", "in"):
            self.take()
            self.take("op", "(")
            values = [self.literal()]
            while self.peek("op", ","):
                self.take()
                values.append(self.literal())
            self.take("op", ")")
            kinds = {_kind(v) for v in values if v is not None}
            if len(kinds) > 1:
                raise FilterError("the values of an 'in' list must all be of one type")
            return InList(self._column(left), tuple(values), negate)
        if not self.peek("op") or self.toks[self.i][1] in "(),":
            raise FilterError("expected a comparison (== != < <= > >=), 'in' or 'is null'")
        op = self.take("op")
        right = self.operand()
        if isinstance(left, Literal) and isinstance(right, Literal):
            raise FilterError("a comparison needs at least one column")
        return Compare(op, left, right)

    @staticmethod
    def _column(operand: Column | Literal) -> Column:
        if not isinstance(operand, Column):
            raise FilterError("'in' and 'is null' need a column on the left")
        return operand


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else "string"


def parse_filter(text: str) -> RowFilter:
    """Parse a row filter expression; raise FilterError saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("empty filter")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"longer than {MAX_FILTER_LENGTH} characters")
    return RowFilter(text=text, tree=_Parser(text).parse())


def _columns(tree: Any) -> set[str]:
    if isinstance(tree, Column):
        return {tree.name}
    if isinstance(tree, Literal):
        return set()
    if isinstance(tree, Compare):
        return _columns(tree.left) | _columns(tree.right)
    if isinstance(tree, (InList, IsNull)):
        return {tree.column.name}
    if isinstance(tree, Not):
        return _columns(tree.part)
    return set().union(*(_columns(p) for p in tree.parts))


def _to_arrow(tree: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(tree, Column):
        return pc.field(tree.name)
    if isinstance(tree, Literal):
        return pc.scalar(tree.value)
    if isinstance(tree, Compare):
        left, right = _to_arrow(tree.left), _to_arrow(tree.right)
        return {
            "==": left == right, "!=": left != right, "<": left < right,
            "<=": left <= right, ">": left > right, ">=": left >= right,
        }[tree.op]
    if isinstance(tree, InList):
        col = pc.field(tree.column.name)
        values = [v for v in tree.values if v is not None]
        if None in tree.values:
            expr = col.isin(values) | col.is_null()
        else:  # null in, null out (as in SQL), so `not in` and `not (.. in ..)` drop null rows
            expr = pc.if_else(col.is_valid(), col.isin(values), pa.scalar(None, pa.bool_()))
        return ~expr if tree.negate else expr
    if isinstance(tree, IsNull):
        expr = pc.field(tree.column.name).is_null()
        return ~expr if tree.negate else expr
    if isinstance(tree, Not):
        return ~_to_arrow(tree.part)
    parts = [_to_arrow(p) for p in tree.parts]
    out = parts[0]
    for p in parts[1:]:
        out = (out & p) if tree.op == "and" else (out | p)
    return out


# -- checking a filter against the columns it will meet ----------------------------------------


def _category(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_temporal(t):
        return "time"
    if pa.types.is_null(t):
        return "null"
    return "other"


_SAYS = {"text": "a quoted string", "number": "a number", "boolean": "true or false",
         "time": "a quoted date or time such as '2024-03-01'"}


def bind(f: RowFilter, schema: Any, masks: dict[str, str] | None = None,
         what: str = "where") -> RowFilter:
    """`f` checked against `schema` (pyarrow), its literals converted to the columns' types.

    Raises FilterError naming an unknown column or a comparison the column's type cannot make,
    for example a number against a masked column, which holds text (REDACTED or a hash).
    """
    masks = masks or {}

    def column(c: Column) -> str:
        if c.name not in schema.names:
            known = ", ".join(schema.names[:30]) + (", ..." if len(schema.names) > 30 else "")
            raise FilterError(f"{what} names unknown column {c.name!r} (columns: {known})")
        return _category(schema.field(c.name).type)

    def value(c: Column, v: Any) -> Any:
        cat = column(c)
        if v is None or cat == "null":
            return v
        got = "boolean" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) \
            else "text"
        if cat == "time" and got == "text":
            import pyarrow as pa

            try:
                return pa.scalar(v).cast(schema.field(c.name).type).as_py()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise FilterError(f"{what}: {v!r} is not a valid value for column {c.name!r} "
                                  f"({schema.field(c.name).type})") from None
        if cat == "number" and got == "boolean":  # SQLite and CSV keep booleans as 0 and 1
            return int(v)
        if cat != got:
            if c.name in masks and masks[c.name] != "null":
                raise FilterError(
                    f"{what}: column {c.name!r} is masked ({masks[c.name]}) and holds text, so "
                    f"it cannot be compared with {_SAYS.get(got, got)}; a filter on a masked "
                    f"column compares the masked values")
            if cat == "other":
                raise FilterError(f"{what}: column {c.name!r} ({schema.field(c.name).type}) "
                                  "can only be tested with 'is null'")
            raise FilterError(f"{what}: column {c.name!r} holds {cat}; compare it with "
                              f"{_SAYS[cat]}, not {_SAYS.get(got, got)}")
        return v

    def walk(tree: Any) -> Any:
        if isinstance(tree, Compare):
            left, right = tree.left, tree.right
            if isinstance(left, Column) and isinstance(right, Column):
                a, b = column(left), column(right)
                if "null" not in (a, b) and a != b:
                    raise FilterError(f"{what}: columns {left.name!r} ({a}) and {right.name!r} "
                                      f"({b}) cannot be compared")
                return tree
            if isinstance(left, Column):
                return Compare(tree.op, left, Literal(value(left, right.value)))
            return Compare(tree.op, Literal(value(right, left.value)), right)
        if isinstance(tree, InList):
            return InList(tree.column, tuple(value(tree.column, v) for v in tree.values),
                          tree.negate)
        if isinstance(tree, IsNull):
            column(tree.column)
            return tree
        if isinstance(tree, Not):
            return Not(walk(tree.part))
        return BoolOp(tree.op, tuple(walk(p) for p in tree.parts))

    return RowFilter(text=f.text, tree=walk(f.tree))
