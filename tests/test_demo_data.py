"""The demo's state directory: real public data, a catalogue and policy over it, passwords."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from jupyterhub_dataaccess.demo import DEMO_USERS, prepare_demo
from jupyterhub_dataaccess.demo.auth import DemoAuthenticator, ensure_passwords
from jupyterhub_dataaccess.demo.data import EXPECTED_ROWS

TIERS = {"public", "internal", "confidential", "restricted"}


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("demo-state")
    prepare_demo(state)
    return state


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_when_prepared_then_each_dataset_has_its_real_row_count(demo_state, name):
    frame = read(demo_state / "data" / name)
    assert len(frame) == EXPECTED_ROWS[name]


def test_when_prepared_then_the_datasets_carry_their_real_columns(demo_state):
    data = demo_state / "data"
    penguins = read(data / "penguins.csv")
    assert {"species", "island", "body_mass_g"} <= set(penguins.columns)
    assert set(penguins["island"]) == {"Biscoe", "Dream", "Torgersen"}
    flights = read(data / "flights.parquet")
    assert {"tailnum", "origin", "dest", "dep_delay"} <= set(flights.columns)
    assert set(flights["origin"]) == {"EWR", "JFK", "LGA"}
    assert "manufacturer" in read(data / "planes.csv").columns


def test_when_prepared_then_the_catalog_names_every_tier_with_absolute_existing_paths(demo_state):
    catalog = yaml.safe_load((demo_state / "catalog.yaml").read_text())
    datasets = {d["id"]: d for d in catalog["datasets"]}
    assert {d["classification"] for d in datasets.values()} == TIERS
    assert {
        "penguins",
        "iris",
        "seattle-weather",
        "airlines",
        "stocks",
        "flights",
        "planes",
    } <= set(datasets)
    for dataset in datasets.values():
        source = dataset["source"]
        if source["kind"] == "iceberg":
            db = Path(source["catalog"]["uri"].removeprefix("sqlite:///"))
            assert db.is_absolute() and db.exists(), db
            continue
        uri = Path(source["uri"])
        assert source["kind"] in ("file", "delta")
        assert uri.is_absolute() and uri.exists(), uri
        assert dataset["owner"] in DEMO_USERS
        assert set(dataset["stewards"]["users"]) <= set(DEMO_USERS)
        assert dataset["stewards"]["groups"] == ["stewards"]
    assert datasets["flights"]["classification"] == "confidential"
    assert datasets["flights"]["columns"]["tailnum"] == {"mask": "hash"}
    assert datasets["flights"]["row_filter"] == "origin != 'LGA'"
    assert datasets["planes"]["classification"] == "restricted"
    assert datasets["planes"]["columns"]["manufacturer"] == {"mask": "redact"}


def test_when_prepared_then_an_iceberg_and_a_delta_table_hold_two_versions_of_real_data(
        demo_state):
    from jupyterhub_dataaccess.config_files import load_catalog
    from jupyterhub_dataaccess.sources.readers import dataset_info, reader_for

    catalog = load_catalog(str(demo_state / "catalog.yaml"))
    weather = catalog.get("seattle-weather-iceberg")
    table = reader_for(weather)._table()
    first, second = [s.snapshot_id for s in table.snapshots()]
    assert dataset_info(weather).rows == EXPECTED_ROWS["seattle-weather.csv"]
    assert dataset_info(weather).version == str(second)
    assert reader_for(weather, str(first)).count(None) == 1096  # 2012-2014
    stocks = catalog.get("stocks-delta")
    assert dataset_info(stocks).version == "1"
    assert dataset_info(stocks).rows == EXPECTED_ROWS["stocks.csv"]
    assert 0 < reader_for(stocks, "0").count(None) < EXPECTED_ROWS["stocks.csv"]
    prepare_demo(demo_state)  # a second start keeps the tables, so versions stay citable
    assert dataset_info(weather).version == str(second)


def test_when_prepared_then_the_policy_has_the_four_tiers_of_the_design(demo_state):
    rules = yaml.safe_load((demo_state / "policy.yaml").read_text())["rules"]
    assert [(r["match"], r["decision"], r.get("approvals"), r["max_days"]) for r in rules] == [
        ({"classification": "public"}, "auto", None, 365),
        ({"classification": "internal", "groups": ["analysts"]}, "auto", None, 90),
        ({"classification": "confidential"}, "review", 1, 30),
        ({"classification": "restricted"}, "review", 2, 7),
    ]


def test_when_prepared_then_passwords_are_private_and_kept_across_starts(demo_state):
    path = demo_state / "passwords.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(path.read_text())
    assert set(first) == set(DEMO_USERS)
    assert len(set(first.values())) == len(DEMO_USERS)
    assert prepare_demo(demo_state) == first


def test_when_a_user_is_added_then_only_that_user_gets_a_new_password(tmp_path):
    path = tmp_path / "passwords.json"
    before = ensure_passwords(path, ["analyst"])
    after = ensure_passwords(path, ["analyst", "steward"])
    assert after["analyst"] == before["analyst"]
    assert after["steward"]


async def test_when_logging_in_then_only_the_right_password_passes(tmp_path):
    passwords = ensure_passwords(tmp_path / "passwords.json", ["analyst"])
    auth = DemoAuthenticator(passwords_file=str(tmp_path / "passwords.json"))
    good = {"username": "analyst", "password": passwords["analyst"]}
    assert await auth.authenticate(None, good) == "analyst"
    assert await auth.authenticate(None, {**good, "password": "wrong"}) is None
    assert await auth.authenticate(None, {"username": "nobody", "password": ""}) is None


def test_when_the_hub_loads_the_demo_config_then_it_wires_users_groups_and_the_service(
    demo_state, monkeypatch
):
    from traitlets.config.loader import PyFileConfigLoader

    from jupyterhub_dataaccess.demo import CONFIG_FILE

    monkeypatch.setenv("DATAACCESS_DEMO_DIR", str(demo_state))
    c = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()

    assert c.JupyterHub.port == 8000 and c.JupyterHub.ip == "127.0.0.1"
    assert c.JupyterHub.spawner_class == "simple"
    assert c.Spawner.default_url == "/lab"
    assert c.SimpleLocalProcessSpawner.home_dir_template.startswith(str(demo_state))
    assert c.Authenticator.admin_users == {"admin"}
    assert c.Authenticator.allowed_users == set(DEMO_USERS)
    assert c.JupyterHub.load_groups["stewards"] == {"users": ["steward", "steward2"]}
    assert c.JupyterHub.db_url.startswith(f"sqlite:///{demo_state}")
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert "dataaccess" in services


def test_when_validated_by_the_command_then_the_demo_catalog_is_accepted(demo_state):
    validate = subprocess.run(
        [
            sys.executable,
            "-c",
            "from jupyterhub_dataaccess.cli import main; main()",
            "catalog",
            "validate",
            str(demo_state / "catalog.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_when_prepared_then_each_demo_user_has_a_home_without_the_news_prompt(demo_state):
    for user in DEMO_USERS:
        settings = next((demo_state / "home" / user).rglob("notification.jupyterlab-settings"))
        assert json.loads(settings.read_text())["fetchNews"] == "false"
