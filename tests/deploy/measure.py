"""Measure the memory and CPU of each plugin process: the numbers behind the DaemonSet resources.

    .venv/bin/python tests/deploy/measure.py [--window 30] [--scrape-every 5] [plugin ...]

For each plugin: build the simulated node of ``devplugin demo`` (the plugin's demo hook), start
``devplugin run <plugin>`` as a subprocess against it (fake kubelet + fake PodResources), wait
for ``/readyz``, then read ``/proc/<pid>/status`` and ``/proc/<pid>/stat``:

* RSS at ready (``VmRSS``) and the peak (``VmHWM``) after the window (the plugin process;
  short-lived children such as rbln-smi are not in it);
* CPU seconds used to get ready (start, config, discovery, first health check, registration),
  children included;
* average CPU over a steady window of ``--window`` seconds while ``/metrics`` is scraped every
  ``--scrape-every`` seconds and PodResources is polled at the default 10 s.

Prints a Markdown table (pasted into deploy/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.deploy.harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.deploy.harness import PLUGINS, http_get, simulated_node
else:
    from .harness import PLUGINS, http_get, simulated_node

TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and of the children it waited for (rbln-smi runs, say)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(f) for f in fields[11:15]) / TICKS  # utime stime cutime cstime


async def measure(name: str, window: float, scrape_every: float) -> dict[str, float]:
    async with simulated_node([name], pod_interval=10.0) as (_, kubelet, _, processes):
        plugin = processes[name]
        pid = plugin.process.pid
        devices = sum(len(kubelet.devices(r)) for r in kubelet.connections)
        rss_ready = status_kib(pid, "VmRSS")
        cpu_ready = cpu_seconds(pid)
        start = time.monotonic()
        while time.monotonic() - start < window:
            status, _ = await asyncio.to_thread(http_get, plugin.url + "/metrics")
            assert status == 200
            await asyncio.sleep(scrape_every)
        elapsed = time.monotonic() - start
        cpu_steady = (cpu_seconds(pid) - cpu_ready) / elapsed
        return {
            "resources": len(kubelet.connections),
            "devices": devices,
            "rss_ready_mib": rss_ready / 1024,
            "rss_after_mib": status_kib(pid, "VmRSS") / 1024,
            "hwm_mib": status_kib(pid, "VmHWM") / 1024,
            "cpu_start_s": cpu_ready,
            "cpu_steady_millicores": cpu_steady * 1000,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plugins", nargs="*", default=list(PLUGINS))
    parser.add_argument("--window", type=float, default=30.0, help="steady window, seconds")
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds between scrapes")
    args = parser.parse_args()
    print(
        "| plugin | resources / devices | RSS at ready | RSS after window | peak RSS (VmHWM) "
        "| CPU to get ready | steady CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.plugins:
        r = asyncio.run(measure(name, args.window, args.scrape_every))
        print(
            f"| {name} | {r['resources']:.0f} / {r['devices']:.0f} "
            f"| {r['rss_ready_mib']:.1f} MiB | {r['rss_after_mib']:.1f} MiB "
            f"| {r['hwm_mib']:.1f} MiB | {r['cpu_start_s']:.2f} s "
            f"| {r['cpu_steady_millicores']:.1f} m |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
