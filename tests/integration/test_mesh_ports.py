"""`make up` when another program takes a chosen port before our process binds it.

free_port() can only say a port was free when asked. Here the race is forced: the
first port chosen for etcd, for the audit service and for the gateway is held by a
listening socket of this test, so each of those processes fails to bind. The mesh
must come up anyway, on other ports.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import deploy.mesh
from deploy.mesh import Mesh


@pytest.fixture()
def squatters() -> Iterator[list[socket.socket]]:
    held = []
    for _ in range(3):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        held.append(sock)
    yield held
    for sock in held:
        sock.close()


def test_up_retries_on_new_ports_when_a_chosen_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, squatters: list[socket.socket]
) -> None:
    taken = [sock.getsockname()[1] for sock in squatters]
    real_free_port = deploy.mesh.free_port
    mesh = Mesh(run_dir=tmp_path / "run", pki_dir=tmp_path / "pki", envoy_base_id=(os.getpid() % 50000) + 7000)
    # up() chooses ports in this order: etcd, etcd-peer, gateway, envoy-admin, then the replicas.
    order = ["etcd", "etcd-peer", "gateway", "envoy-admin", *mesh.replica_names()]
    squatted = {order.index("etcd"): taken[0], order.index("gateway"): taken[1], order.index("audit"): taken[2]}
    calls = iter(range(10_000))

    def racing_free_port() -> int:
        return squatted.get(next(calls)) or real_free_port()

    monkeypatch.setattr(deploy.mesh, "free_port", racing_free_port)
    try:
        mesh.up()
        assert mesh.ports["etcd"] not in taken
        assert mesh.ports["gateway"] not in taken
        assert mesh.ports["audit"] not in taken
        mesh.wait_serving(mesh.gateway_address, "audit", via_gateway=True, timeout=30)
        logs = {name: (mesh.log_dir / f"{name}.log").read_text(errors="replace") for name in ("etcd", "audit")}
        assert "address already in use" in logs["etcd"].lower()  # the race did happen, and was survived
    finally:
        mesh.down()


def test_the_fault_tests_etcd_retries_on_new_ports_when_its_port_is_taken(
    tmp_path: Path, squatters: list[socket.socket]
) -> None:
    from tests.integration.coordinator_support import EtcdServer

    server = EtcdServer(tmp_path / "etcd")
    server.client_port = squatters[0].getsockname()[1]
    with server:
        assert server.client_port != squatters[0].getsockname()[1]
        assert server.started_once
