"""``TF_CONFIG`` for several training workers: what ``MultiWorkerMirroredStrategy`` reads.

Each worker of a multi-worker run starts ``python -m tfod.train train`` (``num_workers`` in
the run's settings) with the same cluster and its own task index; worker 0 is the chief (it
keeps the checkpoints, events and ``train_status.json``; the others save into temporary
folders they delete). The local launcher starts them all on 127.0.0.1; on several hosts each
host's launcher is given its worker's ``TF_CONFIG``.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Sequence


def worker_tf_configs(num_workers: int, host: str = "127.0.0.1", base_port: int = 12345,
                      ports: Sequence[int] | None = None) -> list[str]:
    """One ``TF_CONFIG`` JSON string per worker, workers at ``host:base_port + i`` (or at
    ``host:ports[i]``)."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, not {num_workers}")
    ports = list(ports) if ports is not None else [base_port + i for i in range(num_workers)]
    if len(ports) != num_workers:
        raise ValueError(f"{len(ports)} ports for {num_workers} workers")
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            for index in range(num_workers)]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()
