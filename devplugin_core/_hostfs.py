"""The only door to the host: every sysfs/dev read and every host path check goes through HostFS.

A ``HostFS`` is rooted at ``--host-root`` (``/`` in production, ``/host`` in a container that
mounts the host root, a temp dir in tests). Plugins always speak in *host* paths
(``/sys/bus/pci/devices/...``, ``/dev/infiniband/uverbs0``); HostFS maps them under the root for
reading, while the paths handed to the kubelet stay real host paths.

Host paths that reach a DeviceSpec or Mount are canonicalised *inside* the root (absolute symlink
targets are re-rooted, ``..`` never climbs above the root) and must lie under an allow-list.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable, Sequence

from ._errors import DevicePluginError, HostPathError

__all__ = [
    "DEFAULT_DEVICE_ALLOWLIST",
    "FAKE_HOST_MARKER",
    "MOUNT_DENYLIST",
    "HostFS",
    "HostReadError",
]

#: A file at the root of a fake host made by ``devplugin_core.testing.FakeHost``. Its presence
#: (and only when the root is not ``/``) lets regular files stand in for device nodes.
FAKE_HOST_MARKER = ".devplugin-fake-host"
DEFAULT_DEVICE_ALLOWLIST: tuple[str, ...] = ("/dev",)
#: Never mounted into a container, whatever a config or plugin says (exact path or below).
MOUNT_DENYLIST: tuple[str, ...] = (
    "/etc",
    "/proc",
    "/root",
    "/boot",
    "/var/lib/kubelet",
    "/run/containerd",
    "/var/run/containerd",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/cdi",
    "/var/run/cdi",
)
#: Never mounted as a whole (but paths below them may be allowed).
MOUNT_DENY_EXACT: tuple[str, ...] = ("/", "/dev", "/sys", "/usr", "/var", "/run", "/opt", "/home")
_MAX_SYMLINK_HOPS = 40
_MISSING = (errno.ENOENT, errno.ENOTDIR)


class HostReadError(DevicePluginError):
    """A host file exists but could not be read or decoded; names the host path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


_CHUNK = 65536


def _under(path: str, prefix: str) -> bool:
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class HostFS:
    """Read the host through ``root``; canonicalise and allow-list host paths."""

    def __init__(self, root: str | os.PathLike[str] = "/", *, fake: bool | None = None) -> None:
        self.root = os.path.realpath(os.fspath(root))
        marker = os.path.join(self.root, FAKE_HOST_MARKER)
        self.fake = (self.root != "/" and os.path.exists(marker)) if fake is None else fake

    def __repr__(self) -> str:
        return f"HostFS({self.root!r}{', fake' if self.fake else ''})"

    # -- mapping ------------------------------------------------------------------------------
    def local(self, host_path: str) -> str:
        """The local path of ``host_path`` (an absolute host path) under the root."""
        if not host_path.startswith("/"):
            raise ValueError(f"host paths are absolute, got {host_path!r}")
        return host_path if self.root == "/" else self.root + host_path

    def to_host(self, local_path: str) -> str:
        """The host path of a local path under the root."""
        if self.root == "/":
            return local_path
        rel = os.path.relpath(local_path, self.root)
        if rel.startswith(".."):
            raise ValueError(f"{local_path!r} is outside the host root {self.root!r}")
        return "/" if rel == "." else "/" + rel

    # -- reading (blocking: call from worker threads) ----------------------------------------
    def read_bytes(self, host_path: str) -> bytes | None:
        """Raw file content, ``None`` when it does not exist."""
        # os.open/os.read: no file object per read (a PCI scan reads ~30 attributes a function)
        try:
            fd = os.open(self.local(host_path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            if err.errno in _MISSING:
                return None
            raise HostReadError(host_path, err.strerror or str(err)) from err
        try:
            first = os.read(fd, _CHUNK)
            if len(first) < _CHUNK and host_path.startswith("/sys/"):
                return first  # a sysfs attribute comes whole in one read (at most a page)
            chunks = [first]
            while first:
                first = os.read(fd, _CHUNK)
                chunks.append(first)
            return b"".join(chunks)
        except OSError as err:
            raise HostReadError(host_path, err.strerror or str(err)) from err
        finally:
            os.close(fd)

    def read_attr(self, host_path: str) -> str | None:
        """A sysfs attribute: stripped UTF-8 text, ``None`` when the file does not exist."""
        data = self.read_bytes(host_path)
        if data is None:
            return None
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise HostReadError(host_path, "not UTF-8 text") from err

    def read_int(self, host_path: str, *, base: int = 10) -> int | None:
        """An integer attribute (``0x`` prefixes allowed with base 16); ``None`` when missing."""
        text = self.read_attr(host_path)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError as err:
            raise HostReadError(host_path, f"not an integer: {text[:40]!r}") from err

    def readlink(self, host_path: str) -> str | None:
        """The target of a symlink, ``None`` when it does not exist or is not a symlink."""
        try:
            return os.readlink(self.local(host_path))
        except OSError as err:
            if err.errno in (*_MISSING, errno.EINVAL):
                return None
            raise HostReadError(host_path, err.strerror or str(err)) from err

    def link_name(self, host_path: str) -> str | None:
        """Base name of a symlink's target (e.g. the driver name of ``.../driver``)."""
        target = self.readlink(host_path)
        return os.path.basename(target.rstrip("/")) if target else None

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entries of a directory; ``[]`` when it does not exist."""
        try:
            return sorted(os.listdir(self.local(host_path)))
        except OSError as err:
            if err.errno in _MISSING:
                return []
            raise HostReadError(host_path, err.strerror or str(err)) from err

    def names(self, host_path: str) -> frozenset[str]:
        """The entries of a directory as a set (cheaper than :meth:`listdir`: no sorting);
        empty when it does not exist."""
        try:
            return frozenset(os.listdir(self.local(host_path)))
        except OSError as err:
            if err.errno in _MISSING:
                return frozenset()
            raise HostReadError(host_path, err.strerror or str(err)) from err

    def exists(self, host_path: str) -> bool:
        """True if the path exists (following symlinks inside the local view)."""
        return os.path.exists(self.local(host_path))

    def lexists(self, host_path: str) -> bool:
        """True if the path exists, dangling symlinks included."""
        return os.path.lexists(self.local(host_path))

    def is_dir(self, host_path: str) -> bool:
        return os.path.isdir(self.local(host_path))

    # -- canonicalisation ---------------------------------------------------------------------
    def realpath(self, host_path: str, *, strict: bool = True, dirs: set[str] | None = None) -> str:
        """Resolve symlinks of ``host_path`` without ever leaving the host root.

        Absolute link targets are taken relative to the root and ``..`` stops at the root, so
        the result is always a host path inside it. With ``strict`` a missing component raises
        :class:`HostPathError`; otherwise the unresolved rest is appended as is. ``dirs``: host
        paths already found to be real directories during one pass (a scan, one Allocate);
        they are not looked at again, and directories found are added.
        """
        if not host_path.startswith("/"):
            raise HostPathError(host_path, "not an absolute path")
        if dirs is not None:  # the common case in a pass: an entry of a directory already met
            parent, _, name = host_path.rpartition("/")
            if parent in dirs and name not in ("", ".", ".."):
                try:
                    mode = os.lstat(self.local(host_path)).st_mode
                except OSError:
                    mode = stat.S_IFLNK  # let the full walk below say what is missing
                if not stat.S_ISLNK(mode):
                    if stat.S_ISDIR(mode):
                        dirs.add(host_path)
                    return host_path
        pending = deque(host_path.split("/"))
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, part])
            if dirs is not None and candidate in dirs:
                resolved.append(part)
                continue
            try:
                st = os.lstat(self.local(candidate))
            except OSError as err:
                if strict:
                    raise HostPathError(
                        host_path, f"{candidate} does not exist", missing=True
                    ) from err
                resolved.append(part)
                resolved.extend(p for p in pending if p not in ("", "."))
                break
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise HostPathError(host_path, "too many levels of symbolic links")
                target = os.readlink(self.local(candidate))
                if target.startswith("/"):
                    resolved = []
                pending.extendleft(reversed(target.split("/")))
            else:
                if dirs is not None and stat.S_ISDIR(st.st_mode):
                    dirs.add(candidate)
                resolved.append(part)
        return "/" + "/".join(resolved)

    def _checked(self, host_path: str, allow: Iterable[str], dirs: set[str] | None = None) -> str:
        if not host_path.startswith("/"):
            raise HostPathError(host_path, "not an absolute path")
        if "\0" in host_path:
            raise HostPathError(host_path, "contains a NUL byte")
        if ".." in host_path.split("/"):
            raise HostPathError(host_path, "contains a '..' component")
        real = self.realpath(host_path, dirs=dirs)
        allowed = tuple(allow)
        if not any(_under(real, prefix) for prefix in allowed):
            via = f" (resolves to {real})" if real != os.path.normpath(host_path) else ""
            if not allowed:
                raise HostPathError(
                    host_path,
                    f"no host path is allowed{via}: the resource's allow-list is empty "
                    "(mounts need Resource(mount_allowlist=(<host directory>,)))",
                )
            shown = ", ".join(allowed)
            raise HostPathError(host_path, f"outside the allowed prefixes {shown}{via}")
        return real

    def _mode(self, host_path: str, real: str) -> int:
        try:
            return os.stat(self.local(real)).st_mode
        except OSError as err:
            raise HostPathError(
                host_path, f"cannot stat: {err.strerror}", missing=err.errno in _MISSING
            ) from err

    def check_device_node(
        self,
        host_path: str,
        allow: Sequence[str] = DEFAULT_DEVICE_ALLOWLIST,
        *,
        dirs: set[str] | None = None,
    ) -> str:
        """Canonical host path of a device node under ``allow``; raises :class:`HostPathError`.

        The target must be a character or block device (on a fake host: any existing
        non-directory file). ``dirs`` as for :meth:`realpath`.
        """
        real = self._checked(host_path, allow, dirs)
        mode = self._mode(host_path, real)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return real
        if self.fake and stat.S_ISREG(mode):
            return real
        raise HostPathError(host_path, "not a device node")

    def check_mount_source(
        self, host_path: str, allow: Sequence[str], *, dirs: set[str] | None = None
    ) -> str:
        """Canonical host path of a mount source under ``allow`` and outside the deny-list.

        The source must be a regular file or a directory. ``dirs`` as for :meth:`realpath`.
        """
        real = self._checked(host_path, allow, dirs)
        if real in MOUNT_DENY_EXACT or any(_under(real, p) for p in MOUNT_DENYLIST):
            raise HostPathError(host_path, f"{real} is never mounted into containers")
        mode = self._mode(host_path, real)
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise HostPathError(host_path, "not a regular file or directory")
        return real
