"""Reading and validating the catalogue and policy files (YAML, line numbers kept).

A bad file raises CatalogError naming the file, the line, the dataset and the field, so the service
can refuse to start (or keep its old configuration on reload) with a message an operator can act on.
The objects built here are the models of catalog.py and policy.py, which do no I/O.
"""

from __future__ import annotations

import gc
import os
import re
from typing import Any

import yaml

from .catalog import (
    DATASET_ID,
    FILE_FORMATS,
    MASKS,
    SOURCE_KINDS,
    Catalog,
    Dataset,
    Source,
    Stewards,
)
from .policy import DECISIONS, DEFAULT_MAX_DAYS, Match, Policy, Rule
from .sources.base import ENV_REF
from .sources.filters import FilterError, parse_filter
from .vocabulary import CLASSIFICATIONS


class CatalogError(ValueError):
    """A catalogue or policy file that cannot be used, with where and why."""


# libyaml's parser when PyYAML has it: the pure-Python one takes minutes on 100,000 datasets
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeLoader):
    """A SafeLoader that remembers the line of every mapping, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {str(key)[:80]!r}", key_node.start_mark)
        seen.add(key)
    mapping = _LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {
        loader.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value
    }
    return mapping


class _LineDict(dict):
    line = 0
    key_lines: dict

    def line_of(self, key: str) -> int:
        return getattr(self, "key_lines", {}).get(key, self.line)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str) -> Any:
    """Parse a YAML file with line numbers kept, or raise CatalogError naming the file."""
    # A large catalogue is millions of small objects, none of them cyclic: the cyclic garbage
    # collector would walk them again and again while they are built (100,000 datasets: 58 s
    # with it, 17 s without).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except OSError as e:
        raise CatalogError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CatalogError(f"{path}:{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    finally:
        if gc_was_enabled:
            gc.enable()


class _Where:
    """Builds 'file line N: dataset X: field F: problem' messages."""

    def __init__(self, path: str, mapping: Any, dataset: str = ""):
        if len(dataset) > 80:  # a bad id may be huge: name it, do not echo it
            dataset = dataset[:80] + "..."
        self.path, self.mapping, self.dataset = path, mapping, dataset

    def error(self, fieldname: str, problem: str) -> CatalogError:
        line = self.mapping.line_of(fieldname) if isinstance(self.mapping, _LineDict) else 0
        where = f"{self.path} line {line}" if line else self.path
        who = f" dataset {self.dataset!r}:" if self.dataset else ""
        return CatalogError(f"{where}:{who} field {fieldname!r}: {problem}")


def _str_list(where: _Where, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.error(name, "must be a list of non-empty strings")
    return tuple(value)


def _parse_source(where: _Where, raw: Any) -> Source:
    if not isinstance(raw, dict):
        raise where.error("source", "must be a mapping with 'kind'")
    sw = _Where(where.path, raw, where.dataset)
    kind = raw.get("kind")
    if kind not in SOURCE_KINDS:
        raise sw.error("kind", f"must be one of {', '.join(SOURCE_KINDS)}")
    allowed = {"sql": {"kind", "url", "table", "query", "partition_by"}, "iceberg": {"kind", "table", "catalog"},
               "delta": {"kind", "uri", "options"}}.get(kind, {"kind", "uri", "format", "options"})
    for key in sorted(set(raw) - allowed, key=str):
        raise sw.error(str(key)[:80], f"is not a known field of a {kind} source")
    if kind in ("iceberg", "delta"):
        return _parse_table_source(sw, kind, raw)
    if kind in ("file", "s3"):
        uri = raw.get("uri")
        if not isinstance(uri, str) or not uri:
            raise sw.error("uri", "is required for a file or s3 source")
        fmt = raw.get("format") or _format_from_uri(uri)
        if fmt not in FILE_FORMATS:
            raise sw.error("format", f"must be one of {', '.join(FILE_FORMATS)}")
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            raise sw.error("options", "must be a mapping")
        return Source(kind=kind, uri=uri, format=fmt, options=dict(options))
    url, table, query = raw.get("url"), raw.get("table") or "", raw.get("query") or ""
    if not isinstance(url, str) or not url:
        raise sw.error("url", "is required for a sql source (a SQLAlchemy URL)")
    for name, value in (("table", table), ("query", query)):
        if not isinstance(value, str):
            raise sw.error(name, "must be a string")
    if bool(table) == bool(query):
        raise sw.error("table", "give exactly one of 'table' or 'query'")
    if table and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", table):
        raise sw.error("table", "must be a plain (optionally schema-qualified) table name")
    key = raw.get("partition_by") or ""
    if not isinstance(key, str) or (key and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)):
        raise sw.error("partition_by", "must be a plain column name")
    if key and not table:
        raise sw.error("partition_by", "splits a 'table' only (not a 'query')")
    return Source(kind="sql", url=url, table=table or "", query=query or "", partition_by=key)


# Settings that hold a secret: only as ${NAME}, so the catalogue file never holds one.
_SECRET_SETTING = re.compile(r"credential|token|secret|password|access.?key|key.?id|sas|"
                             r"private.?key|session", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:]*:([^/@]+)@", re.IGNORECASE)


def _settings(sw: _Where, name: str, value: Any) -> dict[str, Any]:
    """A mapping of library settings (pyiceberg catalog properties, delta-rs storage options):
    scalar values, secrets only as ${ENV} references."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise sw.error(name, "must be a mapping")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, (str, int, float, bool)):
            raise sw.error(name, f"{str(key)[:80]!r} must be a name with a plain value")
        text = str(item)
        secret = _SECRET_SETTING.search(key) and not ENV_REF.fullmatch(text.strip())
        password = _URL_PASSWORD.match(text)
        if secret or (password and not ENV_REF.fullmatch(password.group(1))):
            raise sw.error(name, f"{key!r} holds a credential: write it as ${{ENV_VARIABLE}} "
                                 "and set that variable in the service's environment")
    return dict(value)


def _parse_table_source(sw: _Where, kind: str, raw: dict) -> Source:
    if kind == "delta":
        uri = raw.get("uri")
        if not isinstance(uri, str) or not uri:
            raise sw.error("uri", "is required for a delta source (the table's root)")
        return Source(kind=kind, uri=uri, options=_settings(sw, "options", raw.get("options")))
    table = raw.get("table")
    if not isinstance(table, str) or not re.fullmatch(r"[^.\s]+(\.[^.\s]+)+", table):
        raise sw.error("table", "is required for an iceberg source, as namespace.name")
    catalog = raw.get("catalog")
    if not isinstance(catalog, dict) or not catalog:
        raise sw.error("catalog", "is required for an iceberg source: pyiceberg catalog "
                                  "properties such as {type: rest, uri: ...}")
    return Source(kind=kind, table=table, catalog=_settings(sw, "catalog", catalog))


def missing_env(catalog: Catalog) -> list[tuple[str, str]]:
    """(dataset, variable) for every ${variable} a source names that the environment lacks:
    the service logs them at load (names only), and those datasets fail to read until set."""
    out = []
    for ds in catalog.datasets.values():
        for name in dict.fromkeys(ENV_REF.findall(repr(ds.source))):
            if name not in os.environ:
                out.append((ds.id, name))
    return out


def _format_from_uri(uri: str) -> str:
    lower = uri.lower()
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"),
                        (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if lower.endswith(suffix):
            return fmt
    return ""


def _parse_dataset(path: str, raw: Any, index: int) -> Dataset:
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: datasets[{index}]: must be a mapping")
    ds_id = raw.get("id")
    where = _Where(path, raw, ds_id if isinstance(ds_id, str) and ds_id else f"#{index + 1}")
    if not isinstance(ds_id, str) or not DATASET_ID.fullmatch(ds_id):
        raise where.error("id", "must match ^[a-z0-9][a-z0-9._-]{0,63}$")
    if ".." in ds_id:
        raise where.error("id", "must not contain '..'")
    title = raw.get("title") or ds_id
    if not isinstance(title, str):
        raise where.error("title", "must be a string")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise where.error("description", "must be a string")
    owner = raw.get("owner") or ""
    if not isinstance(owner, str):
        raise where.error("owner", "must be a hub user name")
    stewards_raw = raw.get("stewards") or {}
    if not isinstance(stewards_raw, dict):
        raise where.error("stewards", "must be a mapping {users: [...], groups: [...]}")
    swhere = _Where(path, stewards_raw, where.dataset)
    for key in sorted(set(stewards_raw) - {"users", "groups"}, key=str):
        raise swhere.error(str(key)[:80], "is not a known stewards field (users, groups)")
    stewards = Stewards(
        users=_str_list(swhere, "users", stewards_raw.get("users")),
        groups=_str_list(swhere, "groups", stewards_raw.get("groups")),
    )
    classification = raw.get("classification", "internal")
    if classification not in CLASSIFICATIONS:
        raise where.error("classification", f"must be one of {', '.join(CLASSIFICATIONS)}")
    tags = _str_list(where, "tags", raw.get("tags"))
    if "source" not in raw:
        raise where.error("source", "is required")
    source = _parse_source(where, raw["source"])
    masks: dict[str, str] = {}
    columns = raw.get("columns") or {}
    if not isinstance(columns, dict):
        raise where.error("columns", "must be a mapping of column name to {mask: ...}")
    for col, rule in columns.items():
        cwhere = _Where(path, columns, where.dataset)
        if not isinstance(col, str) or not col:
            raise cwhere.error(str(col), "column names must be strings")
        if isinstance(rule, dict) and "mask" in rule and rule["mask"] is None:
            raise cwhere.error(col, 'bare null is YAML\'s empty value, not the null mask: quote '
                                    'it: mask: "null"')
        if not isinstance(rule, dict) or rule.get("mask") not in MASKS:
            raise cwhere.error(col, f"needs mask: one of {', '.join(MASKS)}")
        if set(rule) - {"mask"}:
            raise cwhere.error(col, "takes only 'mask'")
        masks[col] = rule["mask"]
    if source.partition_by in masks:  # a plan's ranges (in its tickets) would show raw values
        raise _Where(path, raw["source"], where.dataset).error(
            "partition_by", f"column {source.partition_by!r} is masked: split by an unmasked "
                            "column (the ranges' bounds are raw values)")
    row_filter = None
    if raw.get("row_filter") not in (None, ""):
        text = raw["row_filter"]
        if not isinstance(text, str):
            raise where.error("row_filter", "must be a string expression")
        try:
            row_filter = parse_filter(text)
        except FilterError as e:
            raise where.error("row_filter", str(e)) from None
    mount_path = mount_claim = ""
    mount = raw.get("mount")
    if mount is not None:
        if not isinstance(mount, dict) or not isinstance(mount.get("path"), str):
            raise where.error("mount", "must be {path: /absolute/path}")
        mount_path = mount["path"]
        if not os.path.isabs(mount_path) or ".." in mount_path.split("/") or "\\" in mount_path:
            raise where.error("mount", "path must be absolute and contain no '..'")
        mount_claim = mount.get("claim") or ""
        if not isinstance(mount_claim, str) or (
                mount_claim and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", mount_claim)):
            raise where.error("mount", "claim must be a Kubernetes PersistentVolumeClaim name")
        unknown_mount = sorted(set(mount) - {"path", "claim"})
        if unknown_mount:
            raise where.error("mount", f"unknown field {unknown_mount[0]!r}")
        _check_mount(where, source, masks, row_filter, mount_path, mount_claim)
    known = {"id", "title", "description", "owner", "stewards", "classification", "tags",
             "source", "columns", "row_filter", "mount"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise where.error(str(unknown[0]), "is not a known field")
    return Dataset(
        id=ds_id, title=title, description=description, owner=owner, stewards=stewards,
        classification=classification, tags=tags, source=source, masks=masks,
        row_filter=row_filter, mount_path=mount_path, mount_claim=mount_claim,
        mount_file=bool(mount_path) and not os.path.isdir(_local_path(source.uri)),
    )


def _local_path(uri: str) -> str:
    return os.path.realpath(uri.removeprefix("file://"))


def _check_mount(where: _Where, source: Source, masks: dict[str, str], row_filter: Any,
                 path: str, claim: str) -> None:
    """A mount hands out the source's files as they are, ungoverned and read outside the
    service: only a plain local file source may be mounted, and only its own path."""
    if source.kind != "file" or "://" in source.uri.removeprefix("file://"):
        raise where.error("mount", "only a local 'kind: file' source can be mounted")
    if masks or row_filter:
        raise where.error("mount", "a dataset with masks (columns) or a row_filter cannot be "
                                   "mounted: the mount would give the files unmasked and "
                                   "unfiltered; drop the mount or the masks and row filter")
    own = _local_path(source.uri)
    if claim:  # path is inside the claim; the service sees the same volume under some root
        inside = path.rstrip("/")
        if not inside or not (own.endswith(inside) or source.uri.endswith(inside)):
            raise where.error("mount", f"path {path!r} in claim {claim!r} must be the source's "
                                       f"own: the source's uri must end with it")
    elif os.path.realpath(path) != own:
        raise where.error("mount", "path must be the source's own (its uri): a mount gives "
                                   "exactly the files the dataset reads, no others")


def load_catalog(path: str) -> Catalog:
    """Load and validate a catalogue file; raise CatalogError naming where it is wrong."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), list):
        raise CatalogError(f"{path}: must be a mapping with a 'datasets' list")
    datasets: dict[str, Dataset] = {}
    for i, item in enumerate(raw["datasets"]):
        ds = _parse_dataset(path, item, i)
        if ds.id in datasets:
            raise _Where(path, item, ds.id).error("id", "is used by two datasets")
        datasets[ds.id] = ds
    return Catalog(datasets=datasets, path=path)


def parse_policy(raw: Any, path: str = "policy") -> Policy:
    """Validate parsed policy YAML; raise CatalogError naming the file, line and field."""
    if raw is None:
        raw = {"rules": []}
    if not isinstance(raw, dict) or not isinstance(raw.get("rules") or [], list):
        raise CatalogError(f"{path}: must be a mapping with a 'rules' list")
    top = _Where(path, raw, "")
    unknown = sorted(set(raw) - {"rules", "default_max_days"}, key=str)
    if unknown:
        raise top.error(str(unknown[0]), "is not a known field (rules, default_max_days)")
    rules = []
    for i, item in enumerate(raw.get("rules") or []):
        if not isinstance(item, dict):
            raise CatalogError(f"{path}: rules[{i}]: must be a mapping")
        where = _Where(path, item, "")
        where_label = f"rule {i + 1}"
        match_raw = item.get("match") or {}
        if not isinstance(match_raw, dict):
            raise where.error("match", f"{where_label}: must be a mapping")
        mwhere = _Where(path, match_raw, "")
        unknown = sorted(set(match_raw) - {"classification", "tags", "groups", "datasets"})
        if unknown:
            raise mwhere.error(unknown[0], f"{where_label}: is not a known match field")
        match = Match(*(_names(mwhere, name, match_raw.get(name), where_label)
                        for name in ("classification", "tags", "groups", "datasets")))
        for c in match.classifications:
            if c not in CLASSIFICATIONS:
                raise mwhere.error("classification", f"{where_label}: {c!r} is not one of "
                                   + ", ".join(CLASSIFICATIONS))
        decision = item.get("decision")
        if decision not in DECISIONS:
            raise where.error("decision", f"{where_label}: must be one of {', '.join(DECISIONS)}")
        approvals = item.get("approvals", 1)
        if not isinstance(approvals, int) or isinstance(approvals, bool) or not 1 <= approvals <= 10:
            raise where.error("approvals", f"{where_label}: must be a whole number from 1 to 10")
        max_days = item.get("max_days", DEFAULT_MAX_DAYS)
        if not _is_days(max_days):
            raise where.error("max_days", f"{where_label}: must be a number of days from 0 to 3650")
        unknown = sorted(set(item) - {"match", "decision", "approvals", "max_days"})
        if unknown:
            raise where.error(unknown[0], f"{where_label}: is not a known field")
        line = item.line if isinstance(item, _LineDict) else 0
        rules.append(Rule(match, decision, approvals, float(max_days), line))
    default_max = raw.get("default_max_days", DEFAULT_MAX_DAYS)
    if not _is_days(default_max):
        raise top.error("default_max_days", "must be a number of days from 0 to 3650")
    return Policy(rules=tuple(rules), default_max_days=float(default_max), path=path)


def _is_days(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value <= 3650)


def _names(where: _Where, name: str, value: Any, label: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.error(name, f"{label}: must be a string or a list of strings")
    return tuple(value)


def load_policy(path: str) -> Policy:
    """Load and validate a policy file."""
    return parse_policy(read_yaml(path), path)
