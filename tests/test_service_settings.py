"""Every setting of the service is a traitlet reached the same way: configure_hub's `settings`,
a config file, the command line (in that order of precedence), with help text for each."""

from __future__ import annotations

import json

import pytest
from traitlets.config import Config

from jupyterhub_dataaccess.hub import configure_hub
from jupyterhub_dataaccess.service.app import SETTINGS_ENV, DataAccessService


def test_every_service_setting_has_help():
    for name, trait in DataAccessService.class_traits(config=True).items():
        assert trait.help and len(trait.help) > 20, name


def test_configure_hub_hands_the_settings_to_the_service_and_refuses_unknown_names(tmp_path):
    c = Config()
    configure_hub(c, catalog="c.yaml", policy="p.yaml", key_dir=str(tmp_path),
                  settings={"threads": 3, "token_cache_seconds": 0, "reload_interval": 7.5})
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "dataaccess"]
    assert json.loads(service["environment"][SETTINGS_ENV]) == {
        "threads": 3, "token_cache_seconds": 0, "reload_interval": 7.5}
    assert not any(a.startswith("--") for a in service["command"])
    # JupyterHub 6 waits 30 s for a service by default: too short for a large catalogue
    from jupyterhub import version_info

    assert service.get("timeout") == (300 if version_info[0] >= 6 else None)
    c = Config()
    configure_hub(c, catalog="c.yaml", policy="p.yaml", start_timeout=600,
                  key_dir=str(tmp_path))
    assert [s.get("timeout") for s in c.JupyterHub.services if s["name"] == "dataaccess"] \
        == [600 if version_info[0] >= 6 else None]

    with pytest.raises(ValueError, match="no setting 'thread'"):
        configure_hub(Config(), catalog="c.yaml", policy="p.yaml", settings={"thread": 3})


def test_settings_then_config_file_then_command_line(tmp_path, monkeypatch):
    """Given settings from configure_hub, a config file and a command line, Then each setting
    takes the value of the highest of them that names it."""
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(
        {"threads": 3, "group_cache_seconds": 4, "reload_interval": 5, "rate_burst": 6}))
    config = tmp_path / "dataaccess_config.py"
    config.write_text("c.DataAccessService.group_cache_seconds = 40\n"
                      "c.DataAccessService.reload_interval = 50\n")
    app = DataAccessService()
    app.load_settings([f"--config={config}", "--DataAccessService.reload_interval=500"])
    assert (app.threads, app.group_cache_seconds, app.reload_interval, app.rate_burst) == (
        3, 40, 500, 6)
    assert app.token_cache_seconds == 5  # untouched: the shipped default
