"""The examples/ plugin (a made-up PCI device) proves the framework end to end."""

from __future__ import annotations

from pathlib import Path

from acme_widget import SPEC

from devplugin_core.testing import run_plugin

RES = "acme.com/widget"


def add_widgets(host, count):  # type: ignore[no-untyped-def]
    for i in range(count):
        address = f"0000:3b:00.{i}"
        host.add_pci(
            address,
            vendor="abcd",
            device="0001",
            class_code=0x120000,
            driver="widget",
            numa_node=i // 2,
        )
        host.write(f"/sys/bus/pci/devices/{address}/widget_id", f"{i}\n")
        host.add_dev(f"/dev/widget{i}")
    host.add_pci(
        "0000:3c:00.0", vendor="abcd", device="0001", class_code=0x120000, driver="vfio-pci"
    )


def test_example_is_small():
    source = Path(__file__).resolve().parents[2] / "examples/acme_widget.py"
    assert len(source.read_text().splitlines()) <= 40


async def test_example_end_to_end(fake_host, fake_kubelet):
    add_widgets(fake_host, 4)
    async with run_plugin(SPEC, fake_host, fake_kubelet) as runtime:
        devices = await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 4)
        assert [d.topology.nodes[0].ID for d in devices] == [0, 0, 1, 1]
        ids = await fake_kubelet.preferred(RES, [d.ID for d in devices], ["0000:3b:00.2"], 2)
        assert ids == ["0000:3b:00.2", "0000:3b:00.3"]
        reply = await fake_kubelet.allocate(RES, ids)
        assert [d.host_path for d in reply.devices] == ["/dev/widget2", "/dev/widget3"]
        assert reply.envs["ACME_WIDGETS"] == "0000:3b:00.2,0000:3b:00.3"
        assert [r.subject for r in runtime.rejections] == ["0000:3c:00.0"]
        await fake_kubelet.restart()
        await fake_kubelet.wait_for_registration(RES, count=2)
