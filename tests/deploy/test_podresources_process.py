"""Per-pod attribution at the process level: a real ``devplugin run`` against the fake kubelet
PodResources API, as the DaemonSet runs it (pod-resources directory mounted, socket inside).

The in-process behaviour is covered by tests/core/test_runtime.py; here: a missing socket at
start is a logged warning and the plugin serves and stays ready; the socket appearing later
turns attribution on without a restart; the kubelet's API going away again empties the
attribution (no stale pods), logs again, and still does not crash.
"""

from __future__ import annotations

import os
import re

from devplugin_core.testing import FakePodResources, PodAssignment

from .harness import http_get, simulated_node, wait_for

PLUGIN = "rdma-shared"


def allocation_lines(metrics: str) -> list[str]:
    return re.findall(r"^devplugin_device_allocation_info\{.*$", metrics, re.M)


async def test_missing_podresources_socket_is_a_warning_then_attribution_recovers():
    async with simulated_node([PLUGIN], pod_resources=False) as (node, kubelet, _, processes):
        plugin = processes[PLUGIN]
        assert not os.path.exists(node.pod_socket)
        await wait_for(lambda: "PodResources API unavailable" in plugin.log(), 10, "the warning")
        warning = next(
            line for line in plugin.log().splitlines() if "PodResources API unavailable" in line
        )
        assert "WARNING" in warning and "socket missing" in warning
        assert node.pod_socket in warning
        assert plugin.process.poll() is None
        assert http_get(plugin.url + "/readyz")[0] == 200
        text = plugin.metrics()
        assert allocation_lines(text) == []
        assert 'devplugin_podresources_errors_total{code="unavailable"}' in text

        resource = sorted(kubelet.connections)[0]
        device = kubelet.devices(resource)[0].ID
        async with FakePodResources(
            node.pod_socket,
            [
                PodAssignment("ml", "trainer-0", "worker", resource, (device,)),
                PodAssignment("ml", "web-0", "main", "example.com/other", ("x",)),
            ],
        ) as pods:
            lines = await wait_for(
                lambda: allocation_lines(plugin.metrics()), 15, "attribution after the socket"
            )
            assert lines == [
                'devplugin_device_allocation_info{container="worker",'
                f'device="{device}",namespace="ml",pod="trainer-0",'
                f'resource="{resource}"}} 1.0'
            ]
            assert f'devplugin_devices_in_use{{resource="{resource}"}} 1.0' in plugin.metrics()
            assert "PodResources API available" in plugin.log()
            assert pods.calls >= 1
        # the API is gone again (kubelet stopped): no stale attribution, a warning, no crash
        if os.path.exists(node.pod_socket):
            os.unlink(node.pod_socket)
        await wait_for(lambda: not allocation_lines(plugin.metrics()), 15, "attribution cleared")
        assert plugin.log().count("PodResources API unavailable") >= 2
        assert plugin.process.poll() is None
        assert http_get(plugin.url + "/readyz")[0] == 200


async def test_attribution_disabled_with_an_empty_socket_flag():
    async with simulated_node([PLUGIN], pod_socket="") as (_, _, _, processes):
        plugin = processes[PLUGIN]
        text = plugin.metrics()
        assert "devplugin_device_allocation_info" not in text
        assert "PodResources" not in plugin.log()
