"""The catalogue model: Dataset, its Source and Stewards, and the Catalog that indexes them.

No file reading here: config_files.py reads and validates the catalogue file into these objects.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .sources.filters import RowFilter

DATASET_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MASKS = ("redact", "hash", "hash-v1", "hash-v2", "null")
SOURCE_KINDS = ("file", "sql", "s3", "iceberg", "delta")
FILE_FORMATS = ("csv", "parquet", "jsonl")


@dataclass(frozen=True)
class Stewards:
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def includes(self, user: str, groups: frozenset[str] | set[str]) -> bool:
        return user in self.users or bool(set(self.groups) & set(groups))


@dataclass(frozen=True)
class Source:
    kind: str
    uri: str = ""
    format: str = ""
    url: str = ""  # sql: SQLAlchemy URL, may reference ${ENV_VARS}
    table: str = ""
    query: str = ""
    partition_by: str = ""  # sql table: an integer or date/time column scan plans split by
    options: dict[str, Any] = field(default_factory=dict)  # s3/fsspec storage options (env refs)
    catalog: dict[str, Any] = field(default_factory=dict)  # iceberg: pyiceberg catalog properties


@dataclass(frozen=True)
class Dataset:
    id: str
    title: str
    description: str = ""
    owner: str = ""
    stewards: Stewards = Stewards()
    classification: str = "internal"
    tags: tuple[str, ...] = ()
    source: Source = Source(kind="file")
    masks: dict[str, str] = field(default_factory=dict)  # column -> redact, hash (-v1, -v2), null
    row_filter: RowFilter | None = None
    mount_path: str = ""  # where the data lives on the host or volume
    mount_claim: str = ""  # Kubernetes: PersistentVolumeClaim holding mount_path (as subPath)
    mount_file: bool = False  # the mount is one file (else a directory)
    # what catalogue search matches a query against, computed once per load, not per query
    search_text: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        text = " ".join((self.id, self.title, self.description, " ".join(self.tags),
                         self.classification))
        object.__setattr__(self, "search_text", unicodedata.normalize("NFC", text).casefold())

    @property
    def ungoverned(self) -> bool:
        """No mask and no row filter: a grant of it covers every value its source holds, so
        the source's own bytes (a whole file, byte ranges of it) may go out as they are. The
        one test of it: a new kind of governance is added here."""
        return not (self.masks or self.row_filter)

    def public_dict(self) -> dict[str, Any]:
        """What any user allowed to browse may see: never the source location or credentials."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "owner": self.owner,
            "stewards": {"users": list(self.stewards.users), "groups": list(self.stewards.groups)},
            "classification": self.classification,
            "tags": list(self.tags),
            "masked_columns": sorted(self.masks),
            "row_filter": self.row_filter.text if self.row_filter else None,
            "mountable": bool(self.mount_path),
        }


@dataclass(frozen=True)
class Catalog:
    """The datasets in catalogue order, with indexes built once per load for search and
    stewardship (a catalogue of 100,000 datasets is searched in milliseconds, not by a Python
    loop over every dataset per query)."""

    datasets: dict[str, Dataset]
    path: str = ""

    def __post_init__(self) -> None:
        order = list(self.datasets.values())
        starts, pos = [], 0
        for d in order:
            starts.append(pos)
            pos += len(d.search_text) + 1
        by_class: dict[str, list[Dataset]] = {}
        by_tag: dict[str, list[Dataset]] = {}
        by_steward: dict[tuple[str, str], list[str]] = {}
        for d in order:
            by_class.setdefault(d.classification, []).append(d)
            for t in dict.fromkeys(d.tags):
                by_tag.setdefault(t, []).append(d)
            for u in dict.fromkeys(d.stewards.users):
                by_steward.setdefault(("user", u), []).append(d.id)
            for g in dict.fromkeys(d.stewards.groups):
                by_steward.setdefault(("group", g), []).append(d.id)
        index = {
            "order": order,
            # every dataset's search text on one line each: one C-speed str.find per match
            "text": "\n".join(d.search_text for d in order),
            "starts": starts,
            "position": {d.id: i for i, d in enumerate(order)},
            "by_class": by_class, "by_tag": by_tag, "by_steward": by_steward,
        }
        object.__setattr__(self, "_index", index)

    def get(self, dataset_id: str) -> Dataset | None:
        return self.datasets.get(dataset_id)

    def find(self, needle: str = "", tag: str = "", classification: str = "") -> list[Dataset]:
        """Datasets, in catalogue order, whose search text contains `needle` (already NFC and
        casefolded) and that carry `tag` and `classification` when those are given."""
        ix = self._index
        if needle:
            found = self._search(needle)
        elif tag:
            found = ix["by_tag"].get(tag, [])
        elif classification:
            found = ix["by_class"].get(classification, [])
        else:
            return list(ix["order"])
        if classification:
            found = [d for d in found if d.classification == classification]
        if tag:
            found = [d for d in found if tag in d.tags]
        return list(found)

    def _search(self, needle: str) -> list[Dataset]:
        from bisect import bisect_right

        ix = self._index
        order, text, starts = ix["order"], ix["text"], ix["starts"]
        if "\n" in needle:  # the line separator of `text`: look dataset by dataset
            return [d for d in order if needle in d.search_text]
        found, at, n = [], 0, len(order)
        while True:
            at = text.find(needle, at)
            if at < 0:
                return found
            i = bisect_right(starts, at) - 1
            found.append(order[i])
            if i + 1 >= n:
                return found
            at = starts[i + 1]

    def stewarded_by(self, user: str, groups: frozenset[str] | set[str]) -> list[str]:
        by = self._index["by_steward"]
        ids = set(by.get(("user", user), ()))
        for g in groups:
            ids.update(by.get(("group", g), ()))
        position = self._index["position"]
        return sorted(ids, key=position.__getitem__)
