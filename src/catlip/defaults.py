"""Defaults shared by several stages (labels, run config, CLI), each defined once, here.

A top-level module that imports nothing, so ``catlip.config`` and ``catlip.cli`` (which builds its parser for
``catlip --help`` without importing the stages) can read it without importing ``catlip.labels`` or forming a cycle.
"""

from __future__ import annotations

# V_tau, the vocabulary pruning threshold: a label key is kept when at least this many captions contain it.
# 500 is the CatLIP paper's value for real corpora: "We found that V_tau = 100 or V_tau = 500 are good pruning
# thresholds. Therefore, in our experiments involving both CC3M and DataComp-1.3B, we use V_tau = 500 as the
# threshold" (Appendix B, "Effect of vocabulary pruning threshold", Fig. 6; also Section 3.2, "Synset vocabulary").
# It is the default of `data.vocab_min_count` and `catlip vocab build --min-count`. Small corpora need a much
# smaller value (the Flickr8k training captions keep only 27 synsets at 500: benchmarks/results/reproduce_small.md at commit ba425cd),
# so every recipe in configs/ states its own, and the demo and benchmarks pass theirs explicitly.
V_TAU_DEFAULT = 500

# Pixel statistics of OpenAI's CLIP (open_clip's and timm's CLIP models use them): catlip's default
# `data.mean` / `data.std`, the normalisation every catlip-trained run records. Runs imported from corenet record
# mean 0 / std 1 instead (corenet feeds [0, 1] pixels).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def user_cache(kind: str):
    """``$CATLIP_CACHE/<kind>``, else ``$XDG_CACHE_HOME/catlip/<kind>``, else ``~/.cache/catlip/<kind>``: where
    frozen features (``features``) and decompressed or remote shards (``shards``, unless ``$CATLIP_SHARD_CACHE``)
    are kept between commands."""
    import os
    from pathlib import Path

    root = os.environ.get("CATLIP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "catlip"
    return Path(root) / kind
