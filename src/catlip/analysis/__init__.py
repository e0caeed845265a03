"""Dataset analysis (CatLIP Fig. 2-3, App. B): synset statistics of a caption corpus and its overlap with a
downstream label set. Pure Python plus matplotlib; torch is imported only for timm's built-in ImageNet lists."""

from catlip.analysis.analyze import analyze, build_summary, render

__all__ = ["analyze", "build_summary", "render"]
