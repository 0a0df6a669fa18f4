"""Security case 26, configured open: with configure_hub(fail_open=True) a spawn goes on without
data access when the service does not answer, and says so in the hub's log."""

from __future__ import annotations

import json
import os
import signal

from hubutil import Hub, Kernel


def test_with_fail_open_the_server_starts_without_data_when_the_service_is_down(
        tmp_path, config_files):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    from hubutil import service_pid

    hub = Hub(state=str(tmp_path / "hub"), catalog=config_files["catalog"],
              policy=config_files["policy"], db_url=f"sqlite:///{tmp_path}/da.sqlite",
              fail_open=True)
    os.makedirs(hub.state)
    hub.start()
    try:
        r = hub.call("analyst", "POST", "/requests", json={"dataset": "penguins",
                                                           "justification": "x"})
        assert r.status_code == 201 and r.json()["status"] == "approved"
        pid = service_pid(hub)
        os.kill(pid, signal.SIGSTOP)
        try:
            hub.start_server("analyst")
        finally:
            os.kill(pid, signal.SIGCONT)
        k = Kernel(hub, "analyst")
        out = k.run("import os, json; print(json.dumps([os.environ.get('DATAACCESS_GRANTS'),"
                    " os.path.exists(os.path.expanduser('~/datasets/salaries'))]))")
        assert json.loads(out["stdout"]) == ["", False]
        assert "Starting analyst without data access (service:" in hub.log_tail(400)
        # the service, back, still decides every read: the grant made before works
        out = k.run("import jupyterhub_dataaccess as da; print(da.load('penguins').shape)")
        assert out["stdout"].strip() == "(344, 8)"
        k.shutdown()
    finally:
        hub.stop()
