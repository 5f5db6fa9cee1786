"""``TF_CONFIG`` for several training workers: what ``MultiWorkerMirroredStrategy`` reads.

Each worker of a multi-worker run starts ``python -m tfod.train train --num_workers=N`` with
the same cluster and its own task index; worker 0 is the chief (it keeps the checkpoints,
events and ``train_status.json``; the others save into temporary folders they delete).
"""
from __future__ import annotations

import json


def worker_tf_configs(num_workers: int, host: str = "127.0.0.1",
                      base_port: int = 12345) -> list[str]:
    """One ``TF_CONFIG`` JSON string per worker, workers at ``host:base_port + i``."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, not {num_workers}")
    cluster = {"worker": [f"{host}:{base_port + index}" for index in range(num_workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            for index in range(num_workers)]
