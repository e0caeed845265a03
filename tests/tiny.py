"""Test helper: the tiny ViT recipe the evaluation tests pre-train in a few steps (32 px, patch 8, 2 blocks)."""

TINY_VIT = """
model:
  backbone: vit_tiny_patch16_224
  backbone_kwargs: {patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}
  image_size: 32
"""


def pretrain_run(recipe: list[str], out, *extra: str):
    """Pre-train ``recipe`` (KEY=VALUE overrides) into ``out`` in this process; returns the run dir."""
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    return pretrain(load_config(None, [*recipe, f"train.output_dir={out}", *extra]))


def pretrain_cli(recipe: list[str], out, *extra: str) -> int:
    """The same through ``catlip pretrain`` (exit code; errors printed as the CLI prints them)."""
    from catlip.cli import main

    return main(["pretrain", *recipe, f"train.output_dir={out}", *extra])


def metrics(run_dir) -> list[dict]:
    """The run's ``metrics.jsonl`` records."""
    import json
    from pathlib import Path

    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
