"""Caption evaluations: image–caption retrieval, head tagging and the in-domain tasks built from held-out captions,
plus the image inputs they share (``images``; it holds the head tagger too until the tag task is one file)."""

TASKS = ("retrieval",)  # the modules here that are evaluation tasks (catlip.evaluate.tasks)
