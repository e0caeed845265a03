"""Atomic checkpoints with no pickled code, resume discovery, and loading a trained method for evaluation.

Layout of ``<run>/checkpoints/step_0000200/``: ``model.safetensors`` (method state dict), optional
``ema.safetensors``, ``train_state.pt`` (optimizer state, sampler position, RNG states, skip counts: tensors and
plain containers only, read with ``torch.load(weights_only=True)``), ``vocab.json`` and ``meta.json``.
A checkpoint is written into a hidden temporary folder and renamed into place; ``latest`` (a one-line file naming
the folder) is replaced after that, so a crash at any moment leaves the previous good checkpoint usable.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import subprocess
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from catlip.errors import CheckpointError, RunDirError, VocabularyError  # noqa: F401  (RunDirError: imported from here)
from catlip.errors import RunInUseError

PREFIX = "step_"
# What an interrupted save_checkpoint can leave in checkpoints/: its temporary folder, the replaced folder of a
# re-saved step, and the temporary ``latest`` file (names below, each ending in the writer's pid).
STALE = re.compile(r"^(\.tmp-step_\d+-\d+|\.old-step_\d+-\d+|\.latest\.tmp\d+)$")


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and write a file in it, or raise a one-line :class:`RunDirError`, before any work."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".catlip-write-test-"):
            pass
    except OSError as err:
        blocker = next((p for p in [run_dir, *run_dir.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (err.strerror or str(err))
        raise RunDirError(f"train.output_dir {run_dir} cannot be created or written ({why}); "
                          "choose another train.output_dir") from None


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete what interrupted checkpoint writes left in ``root`` (only names :data:`STALE` matches)."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        if not STALE.match(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
# Sections whose change makes old weights meaningless for the run (the rest may change between resumes).
COMPAT_SECTIONS = ("model", "method")
# ...except the input size: a run may go on at another resolution (progressive resizing), as under data.image_size
COMPAT_EXEMPT = ("model.image_size",)


def code_version() -> dict:
    from catlip import __version__

    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"catlip": __version__, "git_commit": commit, "torch": torch.__version__}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights), and we must not alias live params
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items() if torch.is_tensor(v)}


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(root: Path, step: int, *, model_state: dict, train_state: dict, meta: dict,
                    vocab_path: Path | None = None, ema_state: dict | None = None, keep: int = 2) -> Path:
    """Write ``root/step_XXXXXXX`` atomically, point ``root/latest`` at it, keep the newest ``keep``."""
    from safetensors.torch import save_file

    name = f"{PREFIX}{step:07d}"
    for what, state in (("model", model_state), ("ema", ema_state or {})):
        bad = first_nonfinite(state)
        if bad is not None:  # a diverged run must not push its last good checkpoints out (keep)
            raise CheckpointError(f"refusing to write checkpoint {root / name}: {what} tensor {bad!r} is not finite "
                                  "(NaN or inf); the previous checkpoint is kept")
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(_tensors(model_state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if ema_state is not None:
            save_file(_tensors(ema_state), str(tmp / "ema.safetensors"), metadata={"format": "pt"})
        torch.save(train_state, tmp / "train_state.pt")
        if vocab_path is not None and Path(vocab_path).exists():
            shutil.copyfile(vocab_path, tmp / "vocab.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))  # written last
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # the same step saved again (e.g. a re-run): move the old one aside first
            old = root / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(root)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final}: {err}; the previous checkpoint is kept") from err
    _write_atomic_text(root / "latest", name + "\n")
    _prune(root, keep, final)
    return final


def first_nonfinite(state: dict) -> str | None:
    """Name of the first floating-point tensor of ``state`` holding a NaN or inf, else None."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def _prune(root: Path, keep: int, newest: Path) -> None:
    dirs = list_checkpoints(root)
    for old in dirs[:-max(1, keep)]:
        if old != newest:
            shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def _why(err: BaseException) -> str:
    """An exception's message on one line (the CLI prints every error as one line)."""
    return " ".join(str(err).split()) or type(err).__name__


@dataclass
class Loaded:
    path: Path
    model_state: dict
    train_state: dict | None
    meta: dict
    ema_state: dict | None = None


def load_checkpoint(path: Path, *, with_train_state: bool = True) -> Loaded:
    """Read and validate one checkpoint folder; any damage is a CheckpointError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: meta.json missing or unreadable ({_why(err)}); incomplete checkpoint") from None
    files = {}
    for name in ("model.safetensors", "ema.safetensors"):
        if name == "ema.safetensors" and not (path / name).exists():
            continue
        try:
            files[name] = load_file(str(path / name))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path / name}: truncated or corrupt ({_why(err)})") from None
    for name, state in files.items():
        bad = first_nonfinite(state)
        if bad is not None:
            raise CheckpointError(f"{path / name}: tensor {bad!r} is not finite (NaN or inf): the run had diverged")
    train_state = load_train_state(path / "train_state.pt") if with_train_state else None
    return Loaded(path, files["model.safetensors"], train_state, meta, files.get("ema.safetensors"))


def load_train_state(file: Path) -> dict:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{file}: refuses to load: it holds pickled code or objects, not plain tensors "
                              f"({str(err).splitlines()[0]})") from None
    except (OSError, EOFError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{file}: truncated or corrupt ({_why(err)})") from None


def not_a_folder(path: Path) -> str | None:
    """Why ``path`` cannot be a run or checkpoint folder ("does not exist" / "is a file, not a folder"), else None."""
    if path.is_dir():
        return None
    return "does not exist" if not path.exists() else "is a file, not a folder"


def find_checkpoint(path: Path, *, with_train_state: bool = True, required: bool = True) -> Loaded | None:
    """Newest valid checkpoint for a run dir, a ``checkpoints/`` dir or one checkpoint folder.

    ``latest`` is tried first; if it is broken the newest valid older checkpoint is used and a warning says so.
    """
    path = Path(path)
    if not path.is_dir():
        if not required:
            return None
        raise CheckpointError(f"{path} {not_a_folder(path)}; give a run dir or one of its checkpoints/step_XXXXXXX "
                              "folders")
    if (path / "meta.json").exists() or (path / "model.safetensors").exists():
        return load_checkpoint(path, with_train_state=with_train_state)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = list(reversed(list_checkpoints(root)))
    pointer = root / "latest"
    if pointer.exists():
        named = root / pointer.read_text().strip()
        candidates = [named] + [c for c in candidates if c != named]
    errors = []
    for cand in candidates:
        try:
            loaded = load_checkpoint(cand, with_train_state=with_train_state)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            warnings.warn(f"skipped broken checkpoint(s): {'; '.join(errors)}; using {cand}", stacklevel=2)
        return loaded
    if required:
        detail = f": {'; '.join(errors)}" if errors else ""
        raise CheckpointError(f"no valid checkpoint under {path}{detail}")
    return None


def check_compatible(meta: dict, cfg_dict: dict, vocab_hash: str | None) -> None:
    """A resume must use the same vocabulary and the same model/method settings as the checkpoint."""
    if meta.get("vocab_hash") != vocab_hash:
        raise VocabularyError(f"checkpoint was trained with vocabulary {meta.get('vocab_hash')} but this run uses "
                              f"{vocab_hash}; resume with the run's own vocab.json or start a new output_dir")
    from catlip.config import Config, upgrade_keys

    old, default = upgrade_keys(meta.get("config", {}), quiet=True), Config().to_dict()
    # A field added after the checkpoint was written counts as its default there (older runs stay resumable).
    was = {s: {**default[s], **old.get(s, {})} for s in COMPAT_SECTIONS}
    diffs = [f"{s}.{k}: {was[s].get(k)!r} -> {v!r}" for s in COMPAT_SECTIONS
             for k, v in cfg_dict[s].items() if was[s].get(k) != v and f"{s}.{k}" not in COMPAT_EXEMPT]
    if diffs:
        raise CheckpointError("checkpoint is incompatible with this config: " + "; ".join(diffs))


# Changes that make a resumed run read other samples (or other random crops) than an uninterrupted run would
EXACT_RESUME_KEYS = ("data.train", "data.batch_size", "train.seed")
# Changed by every resume itself: not worth a line
RESUME_OWN_KEYS = ("train.resume", "train.resume_changes")


def config_changes(meta: dict, cfg_dict: dict) -> list[tuple[str, object, object]]:
    """``(section.key, stored, new)`` for each setting that differs from the checkpoint's config."""
    from catlip.config import Config, upgrade_keys

    old, default = upgrade_keys(meta.get("config", {}), quiet=True), Config().to_dict()
    changes = []
    for section, fields in cfg_dict.items():
        was = {**default.get(section, {}), **old.get(section, {})}  # fields added later: their default
        changes += [(f"{section}.{k}", was.get(k), v) for k, v in fields.items()
                    if was.get(k) != v and f"{section}.{k}" not in RESUME_OWN_KEYS]
    return changes


def check_resume_changes(changes: list, allow: bool) -> None:
    """Changes of :data:`EXACT_RESUME_KEYS` break exact resume: an error unless ``train.resume_changes=allow``."""
    breaking = [key for key, _, _ in changes if key in EXACT_RESUME_KEYS]
    if breaking and not allow:
        raise CheckpointError(f"resuming with changed {', '.join(breaking)} would not continue the run exactly "
                              "(other samples or crops); set train.resume_changes=allow to accept that, or restore "
                              "the stored values")


LOCK_NAME = ".catlip-run.lock"


class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.catlip-run.lock``, which names the holder (pid, host).

    The kernel drops the lock when its process dies (even by SIGKILL), so a lock left by a dead run is simply free;
    its file still names that run, which :meth:`acquire` reports as taken over. A clean release empties the file.
    """

    def __init__(self, run_dir: Path):
        self.path, self.fd = Path(run_dir) / LOCK_NAME, None

    def acquire(self) -> str | None:
        """Take the lock or raise :class:`RunInUseError` naming the holder; returns a note on a take-over."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(_read_fd(fd))
            os.close(fd)
            raise RunInUseError(f"{self.path.parent} is in use by another run ({holder}, lock {self.path}); wait "
                                "for it to end or choose another train.output_dir") from None
        except OSError as err:  # a filesystem without flock: run unguarded rather than not at all
            os.close(fd)
            return f"cannot lock {self.path} ({err.strerror}); make sure no other run uses this train.output_dir"
        previous = _read_fd(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": _host()}).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return f"took over the lock of a run that is no longer running ({_holder(previous)})" if previous else None

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)  # empty: the next run sees a clean hand-over, not a dead holder
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _host() -> str:
    import socket

    return socket.gethostname()


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its pid and host yet" if not text else f"lock file says {text[:80]!r}"


@dataclass
class Pretrained:
    method: torch.nn.Module
    config: object
    vocab: object
    meta: dict
    path: Path | None = None  # the checkpoint folder the weights came from

    def describe(self) -> str:
        """``RUN/checkpoints/step_0001200 (step 1200 of 1200)``: which checkpoint, and how far its run had got
        (an imported model says where it came from instead)."""
        imported = self.meta.get("imported")
        if imported:
            return f"{self.path} (imported from {imported.get('format')} {Path(imported.get('checkpoint', '')).name})"
        return describe_checkpoint(self.path, self.meta.get("step"), self.config.optim.steps)


def describe_checkpoint(path: Path | str | None, step: int | None, steps: int | None) -> str:
    """A checkpoint folder with its step and the run's scheduled steps (``optim.steps`` of its recorded config)."""
    return f"{path} (step {'?' if step is None else step}{f' of {steps}' if steps else ''})"


def load_pretrained(path: str | Path, *, ema: bool = False) -> Pretrained:
    """A trained method (eval mode, CPU) with its config and vocabulary, from a run dir or checkpoint dir."""
    from catlip.config import from_dict, upgrade_keys
    from catlip.methods import build_method

    loaded = find_checkpoint(Path(path), with_train_state=False)
    cfg = from_dict(upgrade_keys(loaded.meta["config"], quiet=True))  # an older run's names: nothing to fix there
    vocab = None
    for cand in (loaded.path / "vocab.json", loaded.path.parent.parent / "vocab.json"):
        if cand.exists():
            from catlip.labels.vocab import Vocabulary

            vocab = Vocabulary.load(cand)
            break
    if vocab is not None and loaded.meta.get("vocab_hash") not in (None, vocab.hash):
        raise VocabularyError(f"{loaded.path}: vocab.json does not match the checkpoint's vocabulary hash")
    from catlip.models.backbone import for_evaluation

    # the trained weights, rebuilt without pre-training-only token dropping (pre.config keeps the recorded value)
    built = replace(cfg, model=for_evaluation(cfg.model))
    method = build_method(built, int(loaded.meta.get("num_classes", len(vocab) if vocab else 0)))
    state = loaded.ema_state if ema and loaded.ema_state is not None else loaded.model_state
    try:
        method.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{loaded.path}: weights do not fit the recorded config: {err}") from None
    return Pretrained(method.eval(), cfg, vocab, loaded.meta, loaded.path)
