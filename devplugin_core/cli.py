"""The ``devplugin`` command line.

::

    devplugin list
    devplugin run PLUGIN [--config-file F] [--host-root DIR] [--kubelet-dir DIR]
                         [--registration-mode auto|kubelet|watcher] [--metrics-address HOST:PORT]
                         [--cdi-dir DIR] [--log-format text|json] [--log-level LEVEL] [plugin flags]
    devplugin discover PLUGIN [same flags] [--json] [--all]
    devplugin validate PLUGIN --config-file F
    devplugin demo [--once]

PLUGIN is an installed plugin's name (``devplugin list``), or a plugin under development:
``module:SPEC`` (importable from the working directory) or ``path/to/plugin.py[:SPEC]``.

Every flag also reads ``DEVPLUGIN_<FLAG>`` (``DEVPLUGIN_KUBELET_DIR``...); a flag on the command
line wins over the environment, which wins over the config file. Exit codes: 0 ok, 1 runtime
failure, 2 invalid config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from ._api import PluginSpec
from ._errors import ConfigError, DevicePluginError, PluginNotFoundError
from ._logs import setup_logging
from ._runtime import (
    DEFAULT_KUBELET_DIR,
    DEFAULT_POD_RESOURCES_SOCKET,
    DEFAULT_REGISTRY_DIR,
    PluginRuntime,
    RuntimeOptions,
)

__all__ = ["main"]

log = logging.getLogger("devplugin.cli")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _env_name(flag: str) -> str:
    return "DEVPLUGIN_" + flag.lstrip("-").upper().replace("-", "_")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _add(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    **kwargs: Any,
) -> None:
    """Add ``flag`` whose default comes from ``DEVPLUGIN_<FLAG>`` when set."""
    env = _env_name(flag)
    value = default
    if env in os.environ:
        try:
            value = type(os.environ[env])
        except (ValueError, argparse.ArgumentTypeError) as err:
            parser.error(f"{env}={os.environ[env]!r}: {err}")
        if "choices" in kwargs and value not in kwargs["choices"]:
            parser.error(f"{env}={value!r}: must be one of {', '.join(kwargs['choices'])}")
    shown = f" [env {env}]"
    parser.add_argument(flag, default=value, type=type, help=help + shown, **kwargs)


def _common_flags(parser: argparse.ArgumentParser, spec: PluginSpec[Any] | None) -> None:
    default_config = spec.default_config_file if spec else None
    shown = (default_config or "none") if spec else "the plugin's own"
    _add(parser, "--config-file", f"config file (JSON or YAML; default {shown})")
    _add(
        parser, "--host-root", "root of the host filesystem (sysfs and /dev are read under it)", "/"
    )
    _add(parser, "--kubelet-dir", "kubelet device-plugin socket directory", DEFAULT_KUBELET_DIR)
    _add(
        parser,
        "--plugins-registry-dir",
        "kubelet plugin-watcher directory (watcher mode; default: plugins_registry beside "
        f"--kubelet-dir, {DEFAULT_REGISTRY_DIR} for the default --kubelet-dir)",
        None,
    )
    _add(
        parser,
        "--registration-mode",
        "register via kubelet.sock, the plugin watcher, or auto (the watcher only if the "
        "kubelet wrote device-plugins/DEPRECATION, which no kubelet up to 1.32 does: auto "
        "means kubelet there)",
        "kubelet",
        choices=["auto", "kubelet", "watcher"],
    )
    port = spec.default_metrics_port if spec else None
    _add(
        parser,
        "--metrics-address",
        f"HOST:PORT for /metrics, /healthz, /readyz ('' disables; default :{port})",
        None,
    )
    _add(parser, "--metrics-tls-cert", "serve metrics over TLS with this certificate (PEM)")
    _add(parser, "--metrics-tls-key", "private key for --metrics-tls-cert (PEM)")
    _add(parser, "--cdi-dir", "write CDI specs here and answer Allocate with CDI devices (off)")
    _add(
        parser,
        "--pod-resources-socket",
        "kubelet PodResources socket ('' disables attribution)",
        DEFAULT_POD_RESOURCES_SOCKET,
    )
    _add(
        parser,
        "--pod-resources-interval",
        "seconds between PodResources List calls",
        10.0,
        type=float,
    )
    _add(parser, "--log-format", "log format", "text", choices=["text", "json"])
    _add(parser, "--log-level", "log level", "info", choices=["debug", "info", "warning", "error"])
    if spec:
        for flag in spec.flags:
            _add(parser, f"--{flag.name}", flag.help, flag.default, type=flag.type)


#: framework flags naming a path: relative values are resolved against the working directory
PATH_FLAGS = (
    "config_file",
    "host_root",
    "kubelet_dir",
    "plugins_registry_dir",
    "metrics_tls_cert",
    "metrics_tls_key",
    "cdi_dir",
    "pod_resources_socket",
)
#: plugin flags whose name ends like this name a path too (``--device-info-dir``...)
PATH_SUFFIXES = ("-dir", "-file", "-path", "-socket")


def _absolute(value: Any) -> Any:
    """A relative path made absolute against the working directory (``""``/``None`` stay:
    they mean "off"); gRPC would otherwise read ``unix://rel/x.sock`` as host ``rel``."""
    if isinstance(value, str) and value and not os.path.isabs(value):
        return os.path.abspath(value)
    return value


def _resolve_paths(args: argparse.Namespace, spec: PluginSpec[Any] | None) -> None:
    for dest in PATH_FLAGS:
        if hasattr(args, dest):
            setattr(args, dest, _absolute(getattr(args, dest)))
    for flag in spec.flags if spec else ():
        if flag.name.endswith(PATH_SUFFIXES) and hasattr(args, flag.dest):
            setattr(args, flag.dest, _absolute(getattr(args, flag.dest)))
    if getattr(args, "plugins_registry_dir", "") is None:
        args.plugins_registry_dir = default_registry_dir(args.kubelet_dir)


def default_registry_dir(kubelet_dir: str) -> str:
    """``plugins_registry`` beside the device-plugins directory (the kubelet's layout)."""
    if os.path.normpath(kubelet_dir) == os.path.normpath(DEFAULT_KUBELET_DIR):
        return DEFAULT_REGISTRY_DIR
    return os.path.join(os.path.dirname(os.path.normpath(kubelet_dir)), "plugins_registry")


def _options(args: argparse.Namespace, spec: PluginSpec[Any], **extra: Any) -> RuntimeOptions:
    plugin_options = {f.dest: getattr(args, f.dest) for f in spec.flags}
    return RuntimeOptions(
        kubelet_dir=args.kubelet_dir,
        registry_dir=args.plugins_registry_dir,
        registration_mode=args.registration_mode,
        host_root=args.host_root,
        config_file=args.config_file or None,
        metrics_address=extra.pop("metrics_address", args.metrics_address),
        metrics_tls_cert=args.metrics_tls_cert or None,
        metrics_tls_key=args.metrics_tls_key or None,
        cdi_dir=args.cdi_dir or None,
        pod_resources_socket=extra.pop("pod_resources_socket", args.pod_resources_socket or None),
        pod_resources_interval=args.pod_resources_interval,
        plugin_options=plugin_options,
        **extra,
    )


def _version_text() -> str:
    import grpc

    return (
        f"devplugin {__version__} (device plugin API v1beta1, grpcio {grpc.__version__}, "
        f"Python {platform.python_version()})"
    )


def _base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devplugin",
        description="Kubernetes device plugins on the devplugin framework.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    return parser


def _plugin_parser(command: str, spec: PluginSpec[Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"devplugin {command} {spec.name}", description=spec.summary
    )
    _common_flags(parser, spec)
    if command == "discover":
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--all", action="store_true", help="list every device")
    return parser


# -- commands -------------------------------------------------------------------------------------
def cmd_list() -> int:
    from ._plugins import installed_plugins

    plugins = installed_plugins()
    if not plugins:
        print("no plugins installed")
        return EXIT_OK
    width = max(len(n) for n in plugins)
    for name, spec in plugins.items():
        config = spec.default_config_file or ("optional" if spec.config_optional else "required")
        port = f":{spec.default_metrics_port}" if spec.default_metrics_port else "off"
        docs = f", docs {spec.docs}" if spec.docs else ""
        print(f"{name:<{width}}  {spec.summary}  [config {config}, metrics {port}{docs}]")
    return EXIT_OK


def cmd_validate(spec: PluginSpec[Any], args: argparse.Namespace) -> int:
    runtime = PluginRuntime(spec, _options(args, spec, watch_config=False, handle_signals=False))
    try:
        loaded, plugin = runtime.load()
    except ConfigError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    names = ", ".join(r.name for r in plugin.resources) or "none (resources follow the host)"
    print(f"valid: {loaded.source}: {len(plugin.resources)} resources: {names}")
    return EXIT_OK


def _device_row(device: Any, health: str) -> dict[str, Any]:
    return {
        "id": device.id,
        "health": health,
        "numa": list(device.numa_nodes),
        "attributes": dict(device.attributes),
    }


async def _discover(spec: PluginSpec[Any], args: argparse.Namespace) -> dict[str, Any]:
    runtime = PluginRuntime(
        spec,
        _options(
            args,
            spec,
            watch_config=False,
            handle_signals=False,
            metrics_address="",
            pod_resources_socket=None,
        ),
    )
    try:
        await runtime.prepare()
    finally:
        await runtime.stop()
    assert runtime.loaded is not None
    report: dict[str, Any] = {
        "config": runtime.loaded.source,
        "resources": [],
        "not_advertised": [],
    }
    for name, rt in runtime.resources.items():
        snapshot = rt.snapshot
        report["resources"].append(
            {
                "name": name,
                "devices": [_device_row(d, snapshot.health[d.id].value) for d in snapshot.devices],
                "unhealthy_reasons": rt.tracker.unhealthy_keys(),
            }
        )
    report["not_advertised"] = [
        {"device": r.subject, "resource": r.resource, "reason": r.reason}
        for r in runtime.rejections
    ]
    return report


def _looks_same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["health"], a["numa"], a["attributes"]) == (b["health"], b["numa"], b["attributes"])


def _print_report(report: dict[str, Any], show_all: bool) -> None:
    print(f"config: {report['config']}")
    for res in report["resources"]:
        devices = res["devices"]
        good = sum(1 for d in devices if d["health"] == "Healthy")
        print(f"\n{res['name']}: {len(devices)} devices ({good} healthy)")
        # Consecutive devices that look the same (e.g. shared RDMA slots) print as one line.
        groups: list[list[dict[str, Any]]] = []
        for d in devices:
            if groups and _looks_same(groups[-1][0], d):
                groups[-1].append(d)
            else:
                groups.append([d])
        shown = groups if show_all else groups[:20]
        for group in shown:
            d = group[0]
            ident = d["id"] if len(group) == 1 else f"{d['id']}..{group[-1]['id']} ({len(group)})"
            numa = ",".join(str(n) for n in d["numa"]) or "-"
            attrs = " ".join(f"{k}={v}" for k, v in d["attributes"].items())
            print(f"  {ident:<16} {d['health']:<9} numa={numa:<3} {attrs}".rstrip())
        hidden = sum(len(g) for g in groups[len(shown) :])
        if hidden:
            print(f"  ... and {hidden} more (--all lists them)")
        for key, reason in res["unhealthy_reasons"].items():
            print(f"  unhealthy {key}: {reason}")
    if report["not_advertised"]:
        print("\nnot advertised:")
        for item in report["not_advertised"]:
            where = f" [{item['resource']}]" if item["resource"] else ""
            print(f"  {item['device']}{where}: {item['reason']}")


def cmd_discover(spec: PluginSpec[Any], args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_discover(spec, args))
    except ConfigError as err:
        print(f"devplugin: invalid config: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except DevicePluginError as err:
        print(f"devplugin: {err}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, args.all)
    return EXIT_OK


def cmd_run(spec: PluginSpec[Any], args: argparse.Namespace) -> int:
    runtime = PluginRuntime(spec, _options(args, spec))
    try:
        asyncio.run(runtime.run())
    except ConfigError as err:
        log.error("invalid config: %s", err)
        print(f"devplugin: invalid config: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except DevicePluginError as err:
        log.error("%s", err)
        print(f"devplugin: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _base_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="list installed plugins")
    for command, text in (
        ("run", "serve a plugin to the kubelet"),
        ("discover", "show what a plugin would advertise, and why not"),
        ("validate", "check a config file (exit 0 valid, 2 invalid)"),
    ):
        p = sub.add_parser(command, help=text, add_help=False)
        p.add_argument("plugin", nargs="?")
    demo = sub.add_parser("demo", help="run every installed plugin on a simulated node")
    demo.add_argument("--once", action="store_true", help="print once and exit (for scripts/CI)")
    demo.add_argument("--plugins", default="", help="comma-separated plugin names (default: all)")
    demo.add_argument(
        "--metrics-port-base",
        type=int,
        default=None,
        help="serve plugin metrics on consecutive ports from here",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "list":
        setup_logging("text", "warning")
        return cmd_list()
    if args.command == "demo":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        from ._demo import run_demo

        setup_logging("text", "warning")
        return run_demo(
            once=args.once,
            plugins=[p for p in args.plugins.split(",") if p],
            metrics_port_base=args.metrics_port_base,
        )
    if not args.plugin or args.plugin.startswith("-"):
        if "-h" in rest or "--help" in rest or args.plugin in ("-h", "--help"):
            generic = argparse.ArgumentParser(
                prog=f"devplugin {args.command} PLUGIN",
                description="Flags of every plugin (`devplugin list` shows the plugins; "
                f"`devplugin {args.command} PLUGIN --help` adds that plugin's own flags).",
            )
            _common_flags(generic, None)
            generic.print_help()
            return EXIT_OK
        parser.error(f"{args.command}: missing PLUGIN (see `devplugin list`)")
    from ._plugins import get_plugin

    try:
        spec = get_plugin(args.plugin)
    except PluginNotFoundError as err:
        print(f"devplugin: {err}", file=sys.stderr)
        return EXIT_CONFIG
    full = _plugin_parser(args.command, spec).parse_args(rest)
    _resolve_paths(full, spec)
    quiet = args.command in ("validate", "discover") and full.log_level == "info"
    setup_logging(full.log_format, "warning" if quiet else full.log_level)
    if args.command == "validate":
        if not full.config_file and not spec.default_config_file:
            print("devplugin: validate needs --config-file", file=sys.stderr)
            return EXIT_CONFIG
        return cmd_validate(spec, full)
    if args.command == "discover":
        return cmd_discover(spec, full)
    return cmd_run(spec, full)


if __name__ == "__main__":
    sys.exit(main())
