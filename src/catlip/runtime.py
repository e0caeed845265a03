"""Where the process runs: the torch device chosen from ``train.device``.

A bottom-layer module so that the data loader (which pins memory and decodes on the training device) and the
trainer pick the device the same way without the data layer importing the trainer.
"""

from __future__ import annotations

import torch

from catlip.errors import ConfigError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | any torch device name; ``cuda`` picks the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda, but torch sees no CUDA device; use cpu or auto")
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
