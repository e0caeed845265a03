"""Transfer Init (CatLIP Sec. 4.2): initialise a target classifier from the rows of the pre-trained head.

Each target class is mapped to vocabulary entries by the mapper of the label source the vocabulary was built with
(``catlip.labels.registry``; the mappers are in ``catlip.labels.mapping``): WordNet synsets by sense and path
similarity, BPE tokens by the name's tokens, words by exact word then lemma. A vocabulary is never mapped as
another source's keys: an unknown source is an error, not the WordNet path. Unmapped classes keep the random
initialisation and are listed in the coverage report, never dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from catlip.evaluate.common.datasets import ClassList
from catlip.labels.mapping import DEFAULT_ALPHA, KINDS, ClassMapping, CoverageReport, clean_name

__all__ = ["DEFAULT_ALPHA", "KINDS", "ClassMapping", "CoverageReport", "class_mapper", "clean_name", "head_mapping",
           "map_classes", "transfer_init", "transferred_rows"]


def class_mapper(vocab: Any, alpha: float = DEFAULT_ALPHA, wordnet: Any = None):
    """The mapper of ``vocab``'s label source (``labels``, or for old vocabularies their ``method`` field)."""
    from catlip.labels import registry

    return registry.of_vocabulary(vocab).mapper(vocab, alpha, wordnet)


def map_classes(classes: ClassList, vocab: Any, alpha: float = DEFAULT_ALPHA, dataset: str = "",
                wordnet: Any = None) -> CoverageReport:
    return class_mapper(vocab, alpha, wordnet).map(classes, dataset)


def head_mapping(model: Any, classes: ClassList, alpha: float, purpose: str, dataset: str
                 ) -> tuple[torch.Tensor, torch.Tensor | None, CoverageReport]:
    """(head weight, head bias, class mapping) of an ``EvalModel`` for ``classes``; ``purpose`` names the use in
    the error a model without a head raises."""
    weight, bias = model.head_weight(purpose)
    return weight, bias, map_classes(classes, model.vocab, alpha, dataset)


def transferred_rows(weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,), mapped mask (C,)): each mapped class's rows averaged; zeros where unmapped."""
    num, dim = len(report.classes), weight.shape[1]
    w = torch.zeros(num, dim, dtype=weight.dtype)
    b = torch.zeros(num, dtype=weight.dtype)
    mask = torch.zeros(num, dtype=torch.bool)
    for m in report.classes:
        if not m.rows:
            continue
        rows = torch.tensor(m.rows)
        w[m.index] = weight.detach().cpu()[rows].mean(0)
        if bias is not None:
            b[m.index] = bias.detach().cpu()[rows].mean(0)
        mask[m.index] = True
    return w, b, mask


def transfer_init(weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport, seed: int = 0) -> nn.Linear:
    """A new ``nn.Linear`` for the target classes: mapped rows copied (averaged), the rest at random init.

    The random rows use the same seeded ``nn.Linear`` initialisation as a Random Init probe, so the two differ
    only where a mapping exists.
    """
    torch.manual_seed(seed)
    lin = nn.Linear(weight.shape[1], len(report.classes))
    w, b, mask = transferred_rows(weight, bias, report)
    with torch.no_grad():
        lin.weight[mask] = w[mask].float()
        lin.bias[mask] = b[mask].float()
    return lin
