"""``free_port``: the test bed's listening ports come from below the kernel's ephemeral range,
so no outgoing connection's local port can take one between its pick and its listener's start
(a session-scoped C-MOVE destination once failed so in CI), and two picks in a row differ."""

from __future__ import annotations

import socket
from pathlib import Path

from connectors.testbed.orthanc import free_port


def test_ports_are_picked_below_the_ephemeral_range_distinct_and_free() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports), (low, ports)
    for port in ports[:5]:  # each can be listened on
        with socket.create_server(("127.0.0.1", port)) as server:
            assert server.getsockname()[1] == port
