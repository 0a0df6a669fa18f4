"""Mount adapters on the real spawner classes: the pod KubeSpawner would submit, the volume binds
DockerSpawner would give the container, the symlinks of the local process spawner.

No cluster and no Docker daemon are contacted: KubeSpawner gets a kubeconfig naming an unused
loopback port, and only manifests and binds are built. The user is a small stand-in with the
attributes the spawners read (name, id, url, escaped_name), the one boundary of these tests.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from jupyterhub_dataaccess.hub import apply_mounts
from jupyterhub_dataaccess.spawners import LocalAdapter, adapter_for, volume_name

try:
    from dockerspawner import DockerSpawner
    from kubespawner import KubeSpawner
except ImportError as e:  # never a skip: the test extra installs both
    raise RuntimeError(f"{e}: install the test extra (pip install '.[test]')") from None

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: jhub}}]
current-context: none
"""

GRANTED = [
    {"dataset": "salaries", "path": "/srv/data/salaries", "claim": "", "type": "directory",
     "grant_id": 1},
    {"dataset": "flights.2024", "path": "/exports/flights", "claim": "data-pvc", "grant_id": 2},
]


def _user(name: str = "analyst") -> SimpleNamespace:
    return SimpleNamespace(name=name, id=7, url=f"/user/{name}/", escaped_name=name)


@pytest.fixture
async def kube(tmp_path, monkeypatch):
    import kubernetes_asyncio.config.kube_config as kube_config
    from jupyterhub.objects import Hub

    cfg = tmp_path / "kubeconfig"
    cfg.write_text(KUBECONFIG)
    # $KUBECONFIG is read when kubernetes_asyncio is imported; point its default there instead
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cfg))
    return KubeSpawner(user=_user(), hub=Hub(), api_token="t", oauth_client_id="c")


@pytest.fixture
def docker():
    from jupyterhub.objects import Hub

    return DockerSpawner(user=_user(), hub=Hub(), api_token="t", oauth_client_id="c")


async def _manifest(spawner: KubeSpawner) -> dict:
    pod = await spawner.get_pod_manifest()
    return spawner.api.api_client.sanitize_for_serialization(pod)


async def test_the_adapter_follows_the_spawner_class(kube, docker):
    from jupyterhub.spawner import LocalProcessSpawner

    assert type(adapter_for(kube)).__name__ == "KubernetesAdapter"
    assert type(adapter_for(docker)).__name__ == "DockerAdapter"
    assert isinstance(adapter_for(LocalProcessSpawner()), LocalAdapter)


async def test_kubespawner_pod_gets_one_read_only_volume_per_granted_dataset(kube):
    """When two grants carry mounts, Then the pod KubeSpawner would submit has exactly two
    dataaccess volumes, mounted readOnly under /home/jovyan/datasets/<id>."""
    kube.volumes = [{"name": "home", "emptyDir": {}}]
    kube.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
    apply_mounts(kube, GRANTED)
    pod = await _manifest(kube)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    ours = sorted(n for n in volumes if n.startswith("dataaccess-"))
    assert ours == sorted([volume_name("salaries"), volume_name("flights.2024")])
    assert "home" in volumes and mounts["home"]["mountPath"] == "/home/jovyan"
    sal = volume_name("salaries")
    assert volumes[sal]["hostPath"] == {"path": "/srv/data/salaries", "type": "Directory"}
    assert mounts[sal] == {"name": sal, "mountPath": "/home/jovyan/datasets/salaries",
                           "readOnly": True}
    fl = volume_name("flights.2024")
    assert volumes[fl]["persistentVolumeClaim"] == {"claimName": "data-pvc", "readOnly": True}
    assert mounts[fl] == {"name": fl, "mountPath": "/home/jovyan/datasets/flights.2024",
                          "subPath": "exports/flights", "readOnly": True}
    assert all(m["readOnly"] for n, m in mounts.items() if n.startswith("dataaccess-"))


async def test_a_single_file_mounts_as_a_file_in_kubernetes_and_docker(kube, docker):
    """When the granted dataset's source is one file, Then KubeSpawner's hostPath volume has
    type File (a Directory volume of a file would stop the pod) and DockerSpawner binds the file
    itself, both at <root>/<id>, read-only."""
    one = [{"dataset": "salaries", "path": "/srv/data/salaries.csv", "claim": "", "type": "file"}]
    apply_mounts(kube, one)
    pod = await _manifest(kube)
    sal = volume_name("salaries")
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == sal]
    assert vol["hostPath"] == {"path": "/srv/data/salaries.csv", "type": "File"}
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == sal]
    assert mount == {"name": sal, "mountPath": "/home/jovyan/datasets/salaries", "readOnly": True}
    apply_mounts(docker, one)
    assert docker.volumes == {"/srv/data/salaries.csv": {
        "bind": "/home/jovyan/datasets/salaries", "mode": "ro"}}


async def test_kubespawner_respawn_after_revoke_drops_the_mount(kube):
    apply_mounts(kube, GRANTED)
    apply_mounts(kube, GRANTED[:1])  # flights revoked before the next spawn
    apply_mounts(kube, GRANTED[:1])  # applying twice adds nothing
    pod = await _manifest(kube)
    assert [v["name"] for v in pod["spec"]["volumes"]
            if v["name"].startswith("dataaccess-")] == [volume_name("salaries")]
    apply_mounts(kube, [])
    pod = await _manifest(kube)
    assert not [v for v in pod["spec"].get("volumes") or [] if v["name"].startswith("dataaccess-")]


async def test_kubespawner_user_options_cannot_add_volumes(kube):
    """When the user sends volumes in user_options, Then KubeSpawner's own option loading and
    the pod ignore them: mounts come only from grants."""
    apply_mounts(kube, GRANTED[:1])
    kube.user_options = {
        "volumes": [{"name": "dataaccess-x", "hostPath": {"path": "/"}}],
        "volume_mounts": [{"name": "dataaccess-x", "mountPath": "/home/jovyan/datasets/x"}],
    }
    await kube.load_user_options()
    pod = await _manifest(kube)
    assert [v["name"] for v in pod["spec"]["volumes"]] == [volume_name("salaries")]
    assert not any(m["mountPath"].endswith("/x") for m in pod["spec"]["containers"][0]
                   ["volumeMounts"])


async def test_kubespawner_paths_with_braces_are_not_templates(kube):
    apply_mounts(kube, [{"dataset": "odd", "path": "/srv/{username}/odd", "claim": ""}])
    pod = await _manifest(kube)
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == volume_name("odd")]
    assert vol["hostPath"]["path"] == "/srv/{username}/odd"


def test_volume_names_are_dns_labels_and_distinct():
    import re

    ids = ["a.b", "a-b", "a_b", "x" * 64, "x" * 63 + "y"]
    names = [volume_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", n) for n in names), names
    assert volume_name("salaries") == "dataaccess-salaries"


def test_dockerspawner_binds_granted_datasets_read_only(docker):
    """When grants carry mounts, Then DockerSpawner's binds for the container are ro."""
    docker.volumes = {"jupyterhub-user-{username}": "/home/jovyan/work"}
    apply_mounts(docker, GRANTED)
    assert docker.volume_binds == {
        "jupyterhub-user-analyst": {"bind": "/home/jovyan/work", "mode": "rw"},
        "/srv/data/salaries": {"bind": "/home/jovyan/datasets/salaries", "mode": "ro"},
        "/exports/flights": {"bind": "/home/jovyan/datasets/flights.2024", "mode": "ro"},
    }
    assert docker.volume_mount_points == sorted([
        "/home/jovyan/work", "/home/jovyan/datasets/salaries",
        "/home/jovyan/datasets/flights.2024"])


def test_dockerspawner_respawn_after_revoke_and_user_options_add_nothing(docker):
    apply_mounts(docker, GRANTED)
    docker.user_options = {"volumes": {"/": {"bind": "/home/jovyan/datasets/root", "mode": "rw"}}}
    apply_mounts(docker, GRANTED[:1])
    assert docker.volume_binds == {
        "/srv/data/salaries": {"bind": "/home/jovyan/datasets/salaries", "mode": "ro"}}


def test_local_spawner_links_granted_datasets_and_unlinks_revoked_ones(tmp_path):
    """When the local spawner starts with grants, Then ~/datasets/<id> link to the data; a
    revoked grant's link is gone at the next spawn; the user's own files stay."""
    from jupyterhub.spawner import LocalProcessSpawner

    home = tmp_path / "home"
    data = tmp_path / "data"
    (data / "salaries").mkdir(parents=True)
    (data / "flights").mkdir()
    spawner = LocalProcessSpawner(user=_user())
    spawner.home_dir = str(home)  # SimpleLocalProcessSpawner's setting; LocalProcess asks pwd
    mounts = [{"dataset": "salaries", "path": str(data / "salaries")},
              {"dataset": "flights", "path": str(data / "flights")}]
    LocalAdapter().apply(spawner, mounts, "")
    links = home / "datasets"
    assert sorted(os.listdir(links)) == ["flights", "salaries"]
    assert os.readlink(links / "salaries") == str(data / "salaries")
    (links / "notes.txt").write_text("mine")
    os.symlink("/etc", links / "sneaky")  # a link the user made: not a grant, removed
    LocalAdapter().apply(spawner, mounts[:1], "")
    assert sorted(os.listdir(links)) == ["notes.txt", "salaries"]


def test_local_spawner_refuses_a_datasets_link_pointing_elsewhere(tmp_path):
    from jupyterhub.spawner import LocalProcessSpawner

    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, home / "datasets")
    spawner = LocalProcessSpawner(user=_user())
    spawner.home_dir = str(home)
    LocalAdapter().apply(spawner, [{"dataset": "s", "path": str(tmp_path)}], "")
    assert os.listdir(elsewhere) == []


def test_case45_a_swap_of_datasets_for_a_symlink_mid_apply_touches_nothing_outside(
        tmp_path, monkeypatch):
    """Given ~/datasets holds a link to a revoked dataset, When the user's process swaps the
    directory for a symlink to another place right after the hub looked at it (injected, not
    raced: at the hub's first listing), Then nothing in that other place is deleted or planted;
    the hub's work lands in the directory it opened, the user's own."""
    from jupyterhub.spawner import LocalProcessSpawner

    home = tmp_path / "home"
    datasets = home / "datasets"
    datasets.mkdir(parents=True)
    os.symlink("/srv/revoked", datasets / "revoked")
    elsewhere = tmp_path / "etc"  # stands for a place only root may change
    elsewhere.mkdir()
    os.symlink("/srv/important", elsewhere / "keep-me")
    spawner = LocalProcessSpawner(user=_user())
    spawner.home_dir = str(home)
    real_listdir = os.listdir

    def swap_then_list(path=".", *args):
        if os.path.lexists(home / "datasets") and not os.path.islink(home / "datasets"):
            os.rename(home / "datasets", home / "moved")
            os.symlink(elsewhere, home / "datasets")
        return real_listdir(path, *args)

    monkeypatch.setattr(os, "listdir", swap_then_list)
    LocalAdapter().apply(spawner, [{"dataset": "granted", "path": str(tmp_path / "data")}], "")
    monkeypatch.undo()
    assert sorted(os.listdir(elsewhere)) == ["keep-me"]
    assert os.readlink(elsewhere / "keep-me") == "/srv/important"
    assert os.listdir(home / "moved") == ["granted"]  # the revoked link went, the grant came


def test_case45_a_symlink_in_place_of_datasets_is_never_followed(tmp_path):
    from jupyterhub.spawner import LocalProcessSpawner

    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink("/srv/x", elsewhere / "keep-me")
    os.symlink(elsewhere, home / "datasets")
    spawner = LocalProcessSpawner(user=_user())
    spawner.home_dir = str(home)
    LocalAdapter().apply(spawner, [{"dataset": "s", "path": str(tmp_path)}], "")
    assert os.listdir(elsewhere) == ["keep-me"]
