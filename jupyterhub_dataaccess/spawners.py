"""Spawner adapters: read-only mounts of granted datasets for local, Docker and Kubernetes servers.

Mounts come only from the service's answer about the user's active grants; nothing the user sets
(user_options, environment, files) is read here.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from typing import Any

log = logging.getLogger("jupyterhub_dataaccess.hub")
CONTAINER_ROOT = "/home/jovyan/datasets"
VOLUME_PREFIX = "dataaccess-"


class MountAdapter:
    def apply(self, spawner: Any, mounts: list[dict[str, Any]], root: str) -> None:
        raise NotImplementedError


class KubernetesAdapter(MountAdapter):
    """KubeSpawner: one volume and one readOnly volumeMount per granted dataset."""

    def apply(self, spawner: Any, mounts: list[dict[str, Any]], root: str) -> None:
        root = root or CONTAINER_ROOT
        volumes = [v for v in (spawner.volumes or []) if not _ours(v.get("name", ""))]
        vmounts = [m for m in (spawner.volume_mounts or []) if not _ours(m.get("name", ""))]
        for m in mounts:
            name = volume_name(m["dataset"])
            target = _literal(posixpath.join(root, m["dataset"]))
            if m.get("claim"):
                volumes.append({"name": name, "persistentVolumeClaim": {
                    "claimName": m["claim"], "readOnly": True}})
                mount = {"name": name, "mountPath": target,
                         "subPath": _literal(m["path"].lstrip("/")), "readOnly": True}
            else:
                volumes.append({"name": name, "hostPath": {"path": _literal(m["path"]),
                                                           "type": "Directory"}})
                mount = {"name": name, "mountPath": target, "readOnly": True}
            vmounts.append(mount)
        spawner.volumes, spawner.volume_mounts = volumes, vmounts


class DockerAdapter(MountAdapter):
    """DockerSpawner: host path -> {bind, mode: ro} per granted dataset."""

    def apply(self, spawner: Any, mounts: list[dict[str, Any]], root: str) -> None:
        root = root or CONTAINER_ROOT
        volumes = {host: spec for host, spec in dict(spawner.volumes or {}).items()
                   if not (isinstance(spec, dict) and spec.get("bind", "").startswith(root + "/"))}
        for m in mounts:
            volumes[_literal(m["path"])] = {"bind": _literal(posixpath.join(root, m["dataset"])),
                                            "mode": "ro"}
        spawner.volumes = volumes


class LocalAdapter(MountAdapter):
    """Local processes: a ~/datasets/<id> symlink per grant, for convenience only.

    This gives no isolation: a local process can read whatever its Unix user can. Operators who
    need isolation use containers (Docker or Kubernetes) and file permissions.
    """

    def apply(self, spawner: Any, mounts: list[dict[str, Any]], root: str) -> None:
        home = _home_of(spawner)
        if not home:
            return
        root = root or os.path.join(home, "datasets")
        try:
            os.makedirs(home, exist_ok=True)
            st = os.lstat(root) if os.path.lexists(root) else None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                log.warning("Not linking datasets for %s: %s is not a directory", spawner.user.name,
                            root)
                return
            if st is None:
                os.mkdir(root, 0o755)
            wanted = {m["dataset"]: m["path"] for m in mounts}
            for entry in os.listdir(root):
                path = os.path.join(root, entry)
                if os.path.islink(path) and os.readlink(path) != wanted.get(entry):
                    os.unlink(path)
            for dataset, target in wanted.items():
                link = os.path.join(root, dataset)
                if not os.path.lexists(link):
                    os.symlink(target, link)
                    _chown_like(link, home)
            _chown_like(root, home)
        except OSError as e:
            log.warning("Could not link datasets for %s: %s", spawner.user.name, e)


def _ours(name: str) -> bool:
    return name.startswith(VOLUME_PREFIX)


def volume_name(dataset: str) -> str:
    """A Kubernetes volume name for a dataset: a DNS label (at most 63 characters), distinct
    for distinct ids (ids differing only in '.', '_' or '-' get a hash suffix)."""
    import hashlib

    label = dataset.replace(".", "-").replace("_", "-")
    if label == dataset and len(VOLUME_PREFIX + label) <= 63:
        return VOLUME_PREFIX + label
    digest = hashlib.sha256(dataset.encode()).hexdigest()[:8]
    return f"{VOLUME_PREFIX}{label[:63 - len(VOLUME_PREFIX) - 9].rstrip('-')}-{digest}"


def _literal(path: str) -> str:
    """A path as a literal: KubeSpawner and DockerSpawner expand {username}-style templates."""
    return path.replace("{", "{{").replace("}", "}}")


def _home_of(spawner: Any) -> str:
    home = getattr(spawner, "home_dir", "")
    if home:
        return home
    try:
        import pwd

        return pwd.getpwnam(spawner.user.name).pw_dir
    except (KeyError, ImportError):
        return ""


def _chown_like(path: str, like: str) -> None:
    try:
        st = os.stat(like)
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    except OSError:
        pass


def adapter_for(spawner: Any) -> MountAdapter:
    names = {cls.__name__ for cls in type(spawner).__mro__}
    if "KubeSpawner" in names:
        return KubernetesAdapter()
    if "DockerSpawner" in names or "SwarmSpawner" in names or "SystemUserSpawner" in names:
        return DockerAdapter()
    return LocalAdapter()
