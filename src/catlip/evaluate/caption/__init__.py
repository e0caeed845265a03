"""Caption evaluations: image–caption retrieval, head tagging and the in-domain tasks built from held-out captions
(``caption_tasks``, used by the benchmarks), plus what retrieval and tagging share: the image inputs (``images``)
and the classification head read as label probabilities (``head``)."""

TASKS = ("retrieval", "tag")  # the modules here that are evaluation tasks (catlip.evaluate.tasks)
