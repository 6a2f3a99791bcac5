"""Run a rendered DaemonSet's container with podman, the way the kubelet would run it.

Everything comes from the DaemonSet that ``kubectl kustomize deploy/<overlay>`` printed: the
container's command and args (``$(VAR)`` expanded as the kubelet expands them), env (values and
the downward-API fields the manifests use), securityContext (read-only root, dropped and added
capabilities, no privilege escalation, privileged, seccomp, runAsUser/runAsGroup from the
container or the pod), resources limits, hostNetwork, and every volume mount:

* ``hostPath`` volumes are bind mounts of the same path under a fake node root (a directory on
  this machine standing for the node's ``/``), checked and created by their ``type`` as the
  kubelet does (``Directory`` must exist, ``DirectoryOrCreate`` is made, ...);
* ``configMap`` volumes are directories laid out like the kubelet's atomic writer
  (``..data -> ..<timestamp>``, one symlink per key), so an edit swaps ``..data`` as a real
  ConfigMap update does;
* ``emptyDir`` volumes are a tmpfs (``medium: Memory``, with ``sizeLimit``) or a directory.

Anything else in the manifest (a volume type, a field of the securityContext or a valueFrom
this module does not know) raises :class:`Unsupported`, so a manifest change cannot silently
run differently here than on a node.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Doc = dict[str, Any]


class Unsupported(AssertionError):
    """The manifest uses something this runner cannot reproduce faithfully."""


#: the container securityContext fields this module maps onto podman flags
_SECURITY_FIELDS = {
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "capabilities",
    "seccompProfile",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
}
#: pod-level securityContext fields
_POD_SECURITY_FIELDS = {"runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"}
#: pod spec fields that change how the container runs and that we map (or check)
_POD_FIELDS_MAPPED = {"hostNetwork", "hostPID", "hostIPC", "securityContext", "volumes"}

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_UNITS = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def quantity_bytes(value: str | int) -> int:
    match = _QUANTITY.match(str(value))
    if not match or match[2] == "m":
        raise Unsupported(f"memory quantity {value!r}")
    return int(float(match[1]) * _UNITS[match[2]])


def quantity_cpus(value: str | int) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as written),
    as in k8s.io/kubernetes third_party/forked/golang/expansion."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass
class PodContext:
    """What the API server and the kubelet fill in for the downward API."""

    pod_ip: str
    node_name: str = "fake-node"
    namespace: str = "default"
    pod_name: str = "devplugin-test"

    def field(self, path: str) -> str:
        values = {
            "status.podIP": self.pod_ip,
            "status.hostIP": self.pod_ip,
            "spec.nodeName": self.node_name,
            "metadata.namespace": self.namespace,
            "metadata.name": self.pod_name,
        }
        if path not in values:
            raise Unsupported(f"downward API field {path}")
        return values[path]


@dataclass
class ConfigMapVolume:
    """A configMap volume on this machine, in the kubelet's atomic-writer layout."""

    directory: Path
    items: dict[str, str]  # key -> file name
    generation: int = 0

    def write(self, data: Mapping[str, str]) -> None:
        """Publish ``data`` (key -> content) like the kubelet: a new timestamped directory,
        then ``..data`` swapped to it with one rename."""
        self.generation += 1
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self.generation}"
        new = self.directory / stamp
        new.mkdir()
        for key, name in self.items.items():
            if key in data:
                (new / name).write_text(data[key])
                (new / name).chmod(0o644)
        link = self.directory / "..data_tmp"
        link.symlink_to(stamp)
        old = (
            os.readlink(self.directory / "..data")
            if (self.directory / "..data").is_symlink()
            else None
        )
        os.replace(link, self.directory / "..data")
        for name in self.items.values():
            user_link = self.directory / name
            if not user_link.is_symlink():
                user_link.symlink_to(f"..data/{name}")
        if old:
            shutil.rmtree(self.directory / old)


@dataclass
class PodmanRun:
    """The ``podman run`` arguments for one container, and what the test needs around them."""

    args: list[str]
    image_args: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    host_network: bool
    privileged: bool
    configmaps: dict[str, ConfigMapVolume] = field(default_factory=dict)
    #: hostPath volume name -> directory or file on this machine
    host_paths: dict[str, Path] = field(default_factory=dict)
    #: container mount path -> (source on this machine or "tmpfs", read-only)
    mounts: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _host_path(node_root: Path, volume: Doc) -> Path:
    spec = volume["hostPath"]
    path = node_root / spec["path"].lstrip("/")
    kind = spec.get("type", "")
    # kubelet: pkg/volume/hostpath/host_path.go checkType / checkTypeInternal
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644)
    checks = {
        "Directory": path.is_dir,
        "DirectoryOrCreate": path.is_dir,
        "File": path.is_file,
        "FileOrCreate": path.is_file,
        "Socket": path.is_socket,
        "CharDevice": path.is_char_device,
        "BlockDevice": path.is_block_device,
        "": lambda: True,
    }
    if kind not in checks:
        raise Unsupported(f"hostPath type {kind!r}")
    if not checks[kind]():
        raise AssertionError(
            f"hostPath {spec['path']} ({kind}) is missing on the node: the pod would not start"
        )
    if kind == "" and not path.exists():
        path.mkdir(parents=True)  # the runtime creates a missing source as a directory
    return path


def _configmap(scratch: Path, volume: Doc, configmaps: Mapping[str, Doc]) -> ConfigMapVolume:
    spec = volume["configMap"]
    source = configmaps.get(spec["name"])
    if source is None and not spec.get("optional"):
        raise AssertionError(f"ConfigMap {spec['name']} is not in the rendered overlay")
    data = dict((source or {}).get("data", {}))
    items = {i["key"]: i["path"] for i in spec.get("items", [])} or {k: k for k in data}
    for name in items.values():
        if "/" in name:
            raise Unsupported(f"configMap item path with a directory: {name}")
    cm = ConfigMapVolume(scratch / f"cm-{volume['name']}", items)
    cm.directory.mkdir(parents=True)
    cm.write(data)
    return cm


def _security_args(pod: Doc, container: Doc) -> tuple[list[str], bool]:
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    unknown = set(sc) - _SECURITY_FIELDS
    if unknown:
        raise Unsupported(f"container securityContext fields {sorted(unknown)}")
    unknown = set(pod_sc) - _POD_SECURITY_FIELDS
    if unknown:
        raise Unsupported(f"pod securityContext fields {sorted(unknown)}")
    args: list[str] = []
    privileged = bool(sc.get("privileged"))
    if privileged:
        args.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        # --read-only-tmpfs=false: podman would otherwise mount tmpfs on /run, /tmp and
        # /var/tmp, which the kubelet does not; only the manifest's volumes are writable.
        args += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = sc.get("capabilities") or {}
    for cap in capabilities.get("drop") or []:
        args += ["--cap-drop", cap]
    for cap in capabilities.get("add") or []:
        args += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):
        raise Unsupported(f"seccompProfile {seccomp}")
    # RuntimeDefault is podman's default profile (privileged containers get none, as with
    # containerd and CRI-O).
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    elif group is not None:
        raise Unsupported("runAsGroup without runAsUser")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and user in (0, None):
        raise AssertionError("runAsNonRoot with UID 0: the kubelet refuses to start it")
    return args, privileged


def podman_run(
    daemonset: Doc,
    configmaps: Mapping[str, Doc],
    node_root: Path,
    scratch: Path,
    pod: PodContext,
    *,
    container_name: str = "devplugin",
) -> PodmanRun:
    """Translate the DaemonSet's pod template into podman run arguments (without the image)."""
    spec = daemonset["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == container_name)
    for key in ("hostPID", "hostIPC"):
        if spec.get(key):
            raise Unsupported(f"{key}: true")
    if spec.get("initContainers"):
        raise Unsupported("initContainers")
    host_network = bool(spec.get("hostNetwork"))
    args = ["--network", "host" if host_network else "none"]
    security, privileged = _security_args(spec, container)
    args += security

    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = expand(str(item["value"]), env)
        elif "fieldRef" in item.get("valueFrom", {}):
            value = pod.field(item["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            raise Unsupported(f"env {item['name']}: {item.get('valueFrom')}")
        env[item["name"]] = value
    if container.get("envFrom"):
        raise Unsupported("envFrom")
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]

    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        args += ["--cpus", f"{quantity_cpus(limits['cpu']):g}"]

    run = PodmanRun(
        args=args,
        image_args=[],
        env=env,
        ports={
            p.get("name", str(p["containerPort"])): p["containerPort"]
            for p in container.get("ports", [])
        },
        host_network=host_network,
        privileged=privileged,
    )
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        unknown = set(mount) - {"name", "mountPath", "readOnly", "recursiveReadOnly"}
        if unknown:
            raise Unsupported(f"volumeMount fields {sorted(unknown)}")
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        read_only = bool(mount.get("readOnly"))
        # recursiveReadOnly: IfPossible -> a read-only bind mount; podman 4.3 has no `rro`.
        if mount.get("recursiveReadOnly") not in (None, "Disabled", "IfPossible"):
            raise Unsupported(f"recursiveReadOnly {mount['recursiveReadOnly']}")
        if "hostPath" in volume:
            source = _host_path(node_root, volume)
            run.host_paths[mount["name"]] = source
            run.mounts[target] = (str(source), read_only)
            args += [
                "--mount",
                f"type=bind,src={source},dst={target}" + (",ro=true" if read_only else ""),
            ]
        elif "configMap" in volume:
            cm = _configmap(scratch, volume, configmaps)
            run.configmaps[mount["name"]] = cm
            run.mounts[target] = (str(cm.directory), True)
            args += ["--mount", f"type=bind,src={cm.directory},dst={target},ro=true"]
        elif "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            if empty.get("medium") == "Memory":
                options = "rw,mode=1777"
                if "sizeLimit" in empty:
                    options += f",size={quantity_bytes(empty['sizeLimit'])}"
                args += ["--tmpfs", f"{target}:{options}"]
                run.mounts[target] = ("tmpfs", False)
            else:
                directory = scratch / f"empty-{mount['name']}"
                directory.mkdir(parents=True, exist_ok=True)
                args += ["--mount", f"type=bind,src={directory},dst={target}"]
                run.mounts[target] = (str(directory), read_only)
        else:
            raise Unsupported(f"volume {mount['name']}: {sorted(set(volume) - {'name'})}")

    command = [expand(c, env) for c in container.get("command", [])]
    if command:
        args += ["--entrypoint", command[0]]
    run.image_args = command[1:] + [expand(a, env) for a in container.get("args", [])]
    return run


__all__: Sequence[str] = [
    "ConfigMapVolume",
    "PodContext",
    "PodmanRun",
    "Unsupported",
    "expand",
    "podman_run",
    "quantity_bytes",
    "quantity_cpus",
]
