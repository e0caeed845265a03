"""The method interface the trainer asks instead of branching on config fields, and the one config check."""

from __future__ import annotations

import inspect

import pytest
import torch

from catlip.config import ConfigError
from catlip.errors import CatlipError
from catlip.methods import build_method
from catlip.methods.base import Method
from catlip.train import loop
from catlip.train.prepare import PREPARATIONS, prepare

TINY = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def _cfg(method: str, *overrides: str):
    from catlip.config import from_dict, read_recipe

    return from_dict(read_recipe(None, [f"method.name={method}", f"model.backbone_kwargs={TINY}",
                                        "model.image_size=16", "model.embed_dim=16", "model.text_width=32",
                                        "model.text_layers=1", "model.text_heads=2", "data.context_length=8",
                                        *overrides]))


class _Asks(Method):
    """A stand-in that asks for a locked tower from a folder that does not exist."""

    def preparations(self):
        return {"locked_tower": "/nonexistent/run"}


def test_methods_ask_for_nothing_by_default():
    method = build_method(_cfg("clip"), 0)
    assert method.preparations() == {} and method.cached_inputs() == {}


def test_lit_asks_for_its_tower_and_its_cache():
    method = build_method(_cfg("lit", "method.image_tower=/runs/src", "method.feature_cache=auto"), 0)
    assert method.preparations() == {"locked_tower": "/runs/src"}
    assert method.cached_inputs() == {"image": "auto"}
    assert build_method(_cfg("lit", "method.image_tower=/runs/src"), 0).cached_inputs() == {}


def test_head_bias_prior_is_asked_of_every_method():
    assert "prior_bias" in build_method(_cfg("catlip", "model.head_bias=prior"), 4).preparations()
    headless = build_method(_cfg("clip", "model.head_bias=prior"), 0)
    with pytest.raises(ConfigError, match="clip has no head"):
        prepare(headless, None, resuming=False)


def test_a_resumed_run_skips_what_its_checkpoint_holds():
    prepare(_Asks(), None, resuming=True)  # the tower is in the checkpoint: the source is not read
    with pytest.raises(CatlipError):
        prepare(_Asks(), None, resuming=False)
    assert not PREPARATIONS["locked_tower"].on_resume and PREPARATIONS["prior_bias"].on_resume


def test_an_unknown_capability_is_a_bug_named_by_the_method():
    method = Method()
    method.ask("telepathy")
    with pytest.raises(ValueError, match="telepathy"):
        prepare(method, None, resuming=True)


def test_the_loop_reads_no_method_setting():
    source = inspect.getsource(loop)
    for field in ("method.image_tower", "method.feature_cache", "model.head_bias", "method.name =="):
        assert field not in source


def test_schema_and_method_checks_are_separate_layers():
    from catlip.config import load_config as schema_only
    from catlip.methods.registry import load_config, validate_config

    assert schema_only(None, ["method.name=lit"]).method.name == "lit"  # the config layer cannot ask the methods
    with pytest.raises(ConfigError, match="needs method.image_tower"):
        load_config(None, ["method.name=lit"])
    resolved = validate_config(schema_only(None, ["method.name=superclass"]))
    assert resolved.spec.name == "superclass" and resolved.source.name == "bpe"


def test_pretrain_checks_a_config_it_was_given_unchecked(tmp_path):
    from catlip.config import load_config as schema_only
    from catlip.train.loop import pretrain

    with pytest.raises(ConfigError, match="belong to a locked-image method"):
        pretrain(schema_only(None, ["method.feature_cache=auto", f"train.output_dir={tmp_path}"]))


def test_the_cache_is_one_module_for_training_and_evaluation():
    from catlip.evaluate.common import features
    from catlip.train import feature_cache

    assert features.module_hash is feature_cache.module_hash
    x = torch.nn.Linear(2, 2)
    assert len(feature_cache.module_hash(x)) == 16
