"""What the trainer does for a method before its first step, by capability, never by method name.

A method says what it needs (``Method.preparations()``: capability -> argument; ``Method.cached_inputs()``: inputs
a feature cache may serve) and this module holds what each answer means, so the loop asks the method instead of
reading method settings from the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


def set_prior_bias(method, vocab, name: str) -> None:
    """``model.head_bias=prior``: every head row starts at its class's caption frequency (models.heads)."""
    from catlip.errors import ConfigError
    from catlip.models.heads import class_prior_bias

    head = getattr(method, "head", None)
    if head is None or vocab is None or not any(vocab.counts):
        raise ConfigError(f"model.head_bias=prior needs a classification head and a vocabulary with caption counts "
                          f"({name} has {'no head' if head is None else 'no counts: give data.vocab from `catlip vocab build`, e.g. '})"
                          + ("" if head is None else "--labels bpe --min-count 1 for SuperClass)"))
    from catlip.losses import SOFTMAX_LOSSES

    softmax = getattr(method, "loss_name", "") in SOFTMAX_LOSSES
    with torch.no_grad():
        head.fc.bias.copy_(class_prior_bias(vocab.counts, vocab.num_captions, softmax))


def _locked_tower(method, source, vocab) -> None:
    from catlip.train.lit import load_image_tower

    load_image_tower(method, source)


def _prior_bias(method, _argument, vocab) -> None:
    set_prior_bias(method, vocab, method.name)


@dataclass(frozen=True)
class Preparation:
    apply: Callable[[Any, Any, Any], None]  # (method, the method's argument, the run's vocabulary)
    on_resume: bool  # False: a resumed run's checkpoint holds the result already (and the source may be gone)


PREPARATIONS = {
    "locked_tower": Preparation(_locked_tower, on_resume=False),
    # on resume too: the checkpoint overwrites the bias, but a vocabulary without counts stays an error
    "prior_bias": Preparation(_prior_bias, on_resume=True),
}


def prepare(method, vocab, *, resuming: bool) -> None:
    """Do what ``method.preparations()`` asks, in its order (a fresh run; ``resuming``: only what a resume needs)."""
    for capability, argument in method.preparations().items():
        step = PREPARATIONS.get(capability)
        if step is None:  # a method asking for something no trainer provides is a bug, not a user error
            raise ValueError(f"{type(method).__name__} asks the trainer for {capability!r}; known: "
                             f"{', '.join(PREPARATIONS)}")
        if step.on_resume or not resuming:
            step.apply(method, argument, vocab)
