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
                kind = "File" if m.get("type") == "file" else "Directory"  # a file as a file
                volumes.append({"name": name, "hostPath": {"path": _literal(m["path"]),
                                                           "type": kind}})
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

    The hub may run as root and the directory is the user's, who may swap it for a symlink at
    any moment: it is opened once with O_NOFOLLOW and every later call works through that file
    descriptor (dir_fd), never through the path again, so nothing outside it is ever touched.
    """

    def apply(self, spawner: Any, mounts: list[dict[str, Any]], root: str) -> None:
        home = _home_of(spawner)
        if not home:
            return
        root = root or os.path.join(home, "datasets")
        wanted = {m["dataset"]: m["path"] for m in mounts}
        try:
            os.makedirs(home, exist_ok=True)
            fd = _open_own_dir(root)
        except OSError as e:
            log.warning("Not linking datasets for %s: %s is not a directory of theirs (%s)",
                        spawner.user.name, root, e.strerror)
            return
        try:
            for entry in os.listdir(fd):
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and os.readlink(entry, dir_fd=fd) != wanted.get(entry):
                    os.unlink(entry, dir_fd=fd)
            for dataset, target in wanted.items():
                try:
                    os.symlink(target, dataset, dir_fd=fd)
                except FileExistsError:
                    pass  # the right link, or a file of the user's: left as it is
            owner = os.stat(home)
            os.fchown(fd, owner.st_uid, owner.st_gid)
        except OSError as e:
            log.warning("Could not link datasets for %s: %s", spawner.user.name, e)
        finally:
            os.close(fd)


def _open_own_dir(path: str) -> int:
    """A directory file descriptor of `path` (made if missing); its last component is never
    followed if it is a symlink (ELOOP), nor taken if it is not a directory (ENOTDIR)."""
    parent = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        name = os.path.basename(path)
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    finally:
        os.close(parent)


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


def adapter_for(spawner: Any) -> MountAdapter:
    names = {cls.__name__ for cls in type(spawner).__mro__}
    if "KubeSpawner" in names:
        return KubernetesAdapter()
    if "DockerSpawner" in names or "SwarmSpawner" in names or "SystemUserSpawner" in names:
        return DockerAdapter()
    return LocalAdapter()
