"""The classification head read as label probabilities, for the caption tasks (head caption scoring, tagging).

A head trained with an independent-label loss (CatLIP's BCE) gives a sigmoid per label; one trained with a
softmax loss (SuperClass) one distribution over the vocabulary, so its probabilities are shares and much smaller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from catlip.errors import CheckpointError
from catlip.losses import SOFTMAX_LOSSES  # heads trained with these define one distribution over the vocabulary


def head_activation(model) -> str:
    """``softmax`` for a head trained with a softmax loss (SuperClass), else ``sigmoid`` (CatLIP's BCE)."""
    return "softmax" if getattr(model.method, "loss_name", "") in SOFTMAX_LOSSES else "sigmoid"


def require_head(model, purpose: str):
    """(weight, bias) of the model's classification head; a model without one is a one-line ``CheckpointError``
    naming the methods that have one."""
    if model.head is None or model.vocab is None:
        from catlip.methods.registry import titles

        raise CheckpointError(f"{purpose} reads a classification head, which {titles(labels=True)} checkpoints have; "
                              f"{model.source} (method {model.method_name}) has none")
    return model.head_weight(purpose)


def head_log_probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Log-probabilities of the head's labels: ``sigmoid`` (CatLIP: independent labels) or ``softmax``
    (SuperClass: one distribution over the vocabulary)."""
    if activation == "softmax":
        return F.log_softmax(logits.float(), dim=-1)
    if activation == "sigmoid":
        return F.logsigmoid(logits.float())
    raise ValueError(f"activation must be sigmoid or softmax, not {activation!r}")
