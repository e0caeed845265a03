"""catlip: pre-train vision backbones on image-text data by classification (CatLIP, SuperClass) next to CLIP."""

__version__ = "0.1.0"
