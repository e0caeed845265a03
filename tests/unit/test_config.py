import pytest

from catlip.config import ConfigError
from catlip.methods.registry import load_config


def test_overrides_are_typed(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method:\n  name: superclass\noptim:\n  lr: 0.01\n")
    cfg = load_config(recipe, ["optim.steps=7", "data.train=[a.tar, b.tar]", "train.compile=true"])
    assert cfg.method.name == "superclass"
    assert cfg.optim.lr == 0.01 and cfg.optim.steps == 7
    assert cfg.data.train == ["a.tar", "b.tar"]
    assert cfg.train.compile is True


@pytest.mark.parametrize("override", ["optim.lrr=1", "nosuch.key=1", "optim.steps=abc", "method.name=moco"])
def test_bad_overrides_are_errors(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_brace_patterns_survive_overrides():
    cfg = load_config(None, ["data.train=[data/{000..127}.tar, b/{a,b}.tar]"])
    assert cfg.data.train == ["data/{000..127}.tar", "b/{a,b}.tar"]
    cfg = load_config(None, ["data.train=shards/{000..009}.tar,extra/{x,y}.tar"])
    assert cfg.data.train == ["shards/{000..009}.tar", "extra/{x,y}.tar"]
