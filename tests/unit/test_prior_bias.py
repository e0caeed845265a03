"""model.head_bias=prior: each head row starts at its class's caption frequency."""

from __future__ import annotations

import math

import pytest
import torch

from catlip.config import load_config
from catlip.errors import ConfigError
from catlip.models.heads import class_prior_bias


def test_sigmoid_rows_start_at_each_classes_log_odds():
    b = class_prior_bias([7074, 5, 0], 30000, softmax=False)
    p = torch.sigmoid(b)
    assert p[0].item() == pytest.approx(7074 / 30000, rel=1e-5)
    assert p[1].item() == pytest.approx(5 / 30000, rel=1e-4)
    assert p[2].item() == pytest.approx(0.5 / 30000, rel=1e-4)  # never seen: half a caption


def test_softmax_rows_start_at_each_classes_share():
    b = class_prior_bias([30, 10, 0], 100, softmax=True)
    assert torch.softmax(b, 0).tolist() == pytest.approx([30 / 40.5, 10 / 40.5, 0.5 / 40.5], rel=1e-5)
    assert b[0] - b[1] == pytest.approx(math.log(3), rel=1e-5)


def test_prior_bias_is_set_when_training_starts(tmp_path):
    from catlip.train.prepare import set_prior_bias as _set_prior_bias
    from catlip.methods import build_method
    from catlip.labels.vocab import Vocabulary

    cfg = load_config(None, ["model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
                             "model.image_size=16", "model.head_bias=prior"])
    vocab = Vocabulary(labels="synsets", keys=["n02084071", "n10287213"], counts=[300, 30], names=["dog", "man"],
                       glosses=["", ""], num_captions=1000)
    method = build_method(cfg, len(vocab))
    _set_prior_bias(method, vocab, "catlip")
    assert torch.sigmoid(method.head.fc.bias).tolist() == pytest.approx([0.3, 0.03], rel=1e-4)
    with pytest.raises(ConfigError, match="caption counts"):
        _set_prior_bias(method, Vocabulary.full_bpe(), "superclass")
    with pytest.raises(ConfigError, match="model.head_bias"):
        load_config(None, ["model.head_bias=learned"])
