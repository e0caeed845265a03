"""``catlip lit RUN``: the LiT run config of a pre-trained run, then the ordinary trainer, which loads the locked
tower (:func:`load_image_tower`) when the method asks for it (``Method.preparations``).

The image tower is the source run's backbone, so its architecture (``model.backbone``, ``backbone_kwargs``,
``stem``, ``pos_resize``, ``image_size``) and pixel convention (``data.mean``, ``std``,
``eval_resize``) are copied from the source's recorded config; a recipe or override
that sets them to something else is an error, not a silent rebuild. The source is pinned to the checkpoint folder
found now (``method.image_tower``), so resuming LiT later reads the same weights even if the source run trained on.
"""

from __future__ import annotations

from pathlib import Path

from catlip.errors import CheckpointError, ConfigError

COPIED = (("model", "backbone"), ("model", "backbone_kwargs"), ("model", "stem"), ("model", "pos_resize"),
          ("model", "image_size"), ("data", "mean"), ("data", "std"), ("data", "eval_resize"))


def source_checkpoint(run: str | Path):
    """The newest valid checkpoint of ``run`` (a run dir or a checkpoint folder), with a LiT-worded error."""
    from catlip.train.checkpoint import find_checkpoint

    path = Path(run)
    if not path.exists():
        raise CheckpointError(f"{run} does not exist (give a pre-training run dir or its "
                              "checkpoints/step_XXXXXXX folder)")
    try:
        return find_checkpoint(path, with_train_state=False)
    except CheckpointError as err:
        raise CheckpointError(f"{run} has no usable pre-trained image tower: {err}") from None


def lit_config(run: str | Path, recipe: str | None, overrides: list[str]):
    """A validated LiT ``Config``: the recipe + overrides, the source's architecture, its image tower pinned."""
    from catlip.config import from_dict, read_recipe, upgrade_keys
    from catlip.methods.registry import get, image_pool_of, image_tower_method, validate_config

    loaded = source_checkpoint(run)  # a checkpoint without backbone weights is refused when the trainer loads it
    src = upgrade_keys(loaded.meta.get("config", {}), quiet=True)  # an older source's names: nothing to fix there
    raw = upgrade_keys(read_recipe(recipe, overrides))
    method = raw.setdefault("method", {})
    method.setdefault("name", image_tower_method())
    if not get(str(method["name"])).needs_image_tower:
        raise ConfigError(f"catlip lit trains a locked-image method ({image_tower_method()}); the recipe sets "
                          f"method.name={method['name']}")
    method["image_tower"] = str(loaded.path.resolve())
    method.setdefault("image_pool", image_pool_of(src.get("method", {})))
    for section, key in COPIED:
        if key not in src.get(section, {}):
            continue
        given = raw.get(section, {}).get(key)
        if given is not None and given != src[section][key]:
            raise ConfigError(f"{section}.{key}={given!r} differs from the image tower's {src[section][key]!r} "
                              f"({loaded.path}); LiT keeps the pre-trained architecture and resolution")
        raw.setdefault(section, {})[key] = src[section][key]
    cfg = from_dict(raw)
    validate_config(cfg)
    return cfg


def load_image_tower(method, source: str | Path) -> dict:
    """Copy the backbone weights of the checkpoint ``source`` into ``method.backbone`` (strict); returns its meta.

    A checkpoint whose weights hold no ``backbone.*`` entries, or entries of another shape, is a one-line
    ``CheckpointError`` naming what it holds.
    """
    from catlip.train.checkpoint import find_checkpoint

    loaded = find_checkpoint(Path(source), with_train_state=False)
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in loaded.model_state.items() if k.startswith(prefix)}
    if not state:
        sample = ", ".join(sorted(loaded.model_state)[:4])
        raise CheckpointError(f"{loaded.path} holds no image backbone (weights: {sample}, ...); LiT needs a run "
                              "of a method with an image tower")
    try:
        method.backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[:2]
        raise CheckpointError(f"{loaded.path}: its backbone does not fit the LiT config's model section: "
                              f"{' '.join(first)}") from None
    return loaded.meta  # load_state_dict keeps each parameter's requires_grad: the tower stays locked
