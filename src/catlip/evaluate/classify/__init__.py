"""Classification evaluations: linear probes, k-NN, multi-label probes, zero-shot and fine-tuning, plus what they
share (``linear``: probe training on frozen features; ``transfer_init``: the pre-trained head's rows for the
target classes)."""

TASKS = ("probe", "knn", "multilabel", "zeroshot", "finetune")  # the modules here that are evaluation tasks (catlip.evaluate.tasks)
