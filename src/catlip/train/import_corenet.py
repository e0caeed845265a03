"""``catlip import corenet CKPT --vocab VOCAB -o RUN``: a released CatLIP checkpoint as an ordinary catlip run.

The run directory is what pre-training writes (``config.yaml``, ``vocab.json``, ``checkpoints/step_0000000/``
with safetensors weights and ``meta.json``), so every command that reads a run (probe, knn, multilabel, zeroshot,
tag, retrieval, finetune, segment, detect, lit) reads it unchanged. Its config is the paper's ViT
(``catlip.models.corenet.model_section``) and corenet's evaluation preprocessing: shorter side 232 (bilinear) ->
centre crop 224, pixels in [0, 1] (mean 0, std 1). Everything is read and checked before anything is written;
the run appears in one rename, so a failed import leaves no file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from catlip.errors import CheckpointError, RunDirError

EVAL_RESIZE = 232  # corenet's ImageNet / Places365 evaluation of these models: shorter side 232, crop 224


def corenet_config(arch: dict[str, Any], output_dir: Path):
    """The run config of an imported model (validated)."""
    from catlip.config import from_dict
    from catlip.methods.registry import validate_config
    from catlip.models.corenet import model_section

    size = arch["image_size"]
    raw = {"data": {"train": [], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                    "eval_resize": round(EVAL_RESIZE * size / 224)},
           "model": model_section(arch),
           "method": {"name": "catlip", "labels": "synsets", "label_options": {"style": "corenet"}},
           "train": {"output_dir": str(output_dir)}}
    cfg = from_dict(raw)
    validate_config(cfg)
    return cfg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _target(output: Path) -> Path:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RunDirError(f"{output} already exists and is not empty; give -o a new folder")
    return output


def import_corenet(checkpoint: str | Path, output: str | Path, vocab: str | Path | None = None) -> dict[str, Any]:
    """Convert, check and write; returns a summary (architecture, vocabulary, dropped tensors, paths)."""
    from catlip.methods import build_method
    from catlip.models import corenet
    from catlip.train.checkpoint import code_version, first_nonfinite

    checkpoint, output = Path(checkpoint), _target(Path(output))
    state, where = corenet.read_state(checkpoint)
    bad = first_nonfinite(state)  # the trainer's own check of the weights it saves and loads
    if bad is not None:
        raise CheckpointError(f"{checkpoint}: tensor {bad} holds NaN or inf values; refusing to use these weights")
    arch = corenet.architecture(state, str(checkpoint))
    converted, dropped = corenet.to_catlip(state)
    cfg = corenet_config(arch, output)
    vocabulary = None
    if vocab is not None:
        from catlip.labels.corenet_vocab import load_corenet_vocab

        vocabulary = load_corenet_vocab(vocab, arch["num_classes"])
    method = build_method(cfg, arch["num_classes"])
    corenet.check_fits(converted, method.state_dict(), str(checkpoint))
    method.load_state_dict(converted, strict=True)
    provenance = {"format": "corenet", "checkpoint": str(checkpoint.resolve()), "sha256": _sha256(checkpoint),
                  "state_dict": where, "dropped": dropped, "vocab": str(Path(vocab).resolve()) if vocab else None}
    meta = {"config": cfg.to_dict(), "step": 0, "num_classes": arch["num_classes"],
            "vocab_hash": vocabulary.hash if vocabulary else None, "vocab_size": len(vocabulary or []),
            "method": "catlip", "imported": provenance, "code": code_version()}
    _write_run(output, cfg, method.state_dict(), meta, vocabulary)
    return {"run": str(output), "architecture": arch, "dropped": dropped, "state_dict": where,
            "vocab": vocabulary, "config": cfg}


def _write_run(output: Path, cfg, model_state: dict, meta: dict, vocabulary) -> None:
    from catlip.atomic import write_json
    from catlip.config import save_config
    from catlip.train.checkpoint import save_checkpoint

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.import-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_config(cfg, tmp / "config.yaml")
        vocab_path = None
        if vocabulary is not None:
            vocab_path = vocabulary.save(tmp / "vocab.json")
        save_checkpoint(tmp / "checkpoints", 0, model_state=model_state, train_state={}, meta=meta,
                        vocab_path=vocab_path, keep=1)
        write_json(tmp / "import.json", meta["imported"], indent=1)
        if output.exists():
            output.rmdir()  # empty (checked before): the rename needs the name free
        os.replace(tmp, output)
    except (OSError, CheckpointError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunDirError(f"cannot write the imported run {output}: {getattr(err, 'strerror', None) or err}") from None
