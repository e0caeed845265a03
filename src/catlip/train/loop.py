"""``pretrain(cfg)``: one training loop for every method (the method owns targets and loss).

Order of a run: run dir created and test-written (an unwritable ``train.output_dir`` is a one-line error before
any work) → process group → leftovers of interrupted checkpoint writes removed → resume point (with
``train.resume=auto`` and every checkpoint damaged: an error naming each file) → vocabulary (checked against the
checkpoint) → method, wrapper, optimizer, states → loader positioned at the exact next sample → logs cut back to
the resumed step → steps → checkpoints → loss curve. On the way the run says what it is: settings that do not do
what they read as (``config.schedule_warnings``, an oversized text tower) on stderr, its vocabulary and the
parameter counts of its towers on stdout.

Safety of a run (issue #19): rank 0 holds an exclusive lock on the run dir for the whole run (a second run on it is
a one-line error naming the first one's pid and host); a resume prints every changed setting and refuses changes
that break an exact continuation (checkpoint.EXACT_RESUME_KEYS) unless ``train.resume_changes=allow``; a run
whose loss or gradient norm is NaN/inf for ``train.nonfinite_patience`` consecutive steps stops with a one-line
error, and no checkpoint with non-finite weights is written; SIGTERM or SIGUSR1 writes a checkpoint at the next
step boundary and exits with code 128 + the signal (143 for SIGTERM, 138 for SIGUSR1; RunPreempted), after
which ``train.resume=auto`` continues bit for bit (before the first step such a signal exits at once, with the same
code). Under torchrun the signal is read at log steps only (every rank must stop at the same step, and agreeing
costs a collective).
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
from pathlib import Path

import torch

from catlip.config import save_config, schedule_warnings
from catlip.errors import RunInUseError, TrainingDivergedError
from catlip.train import checkpoint as ckpt
from catlip.train import distributed as dd
from catlip.train.log import RunLogger, text_tower_warning, tower_summary
from catlip.train.optim import build_optimizer, lr_at, set_lr
from catlip.train.prepare import prepare
from catlip.train.step import NonFiniteWatch, to_device, train_step
from catlip.train.vocab_setup import describe_vocabulary, resolve_vocabulary, vocabulary_origin

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class RunPreempted(SystemExit):
    """SIGTERM / SIGUSR1 stopped the run after it wrote a checkpoint: not a failure, so not a CatlipError.

    Its exit code is 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1), what a scheduler expects of a
    process its signal ended, and distinct from 2 (an error) and 0 (finished).
    """

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _precision(cfg, device: torch.device):
    """(autocast context factory, GradScaler or None). auto = bf16 on GPU, fp32 on CPU."""
    p = cfg.train.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" else "fp32"
    if p == "fp32":
        return contextlib.nullcontext, None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[p]
    scaler = torch.amp.GradScaler(device.type) if p == "fp16" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _resume_point(cfg, run_dir: Path):
    spec = cfg.train.resume
    if not spec:
        return None
    if spec == "auto":
        root = run_dir / "checkpoints"
        if not ckpt.list_checkpoints(root) and not (root / "latest").exists():
            return None  # nothing to continue: a fresh start
        try:
            return ckpt.find_checkpoint(run_dir, required=True)
        except ckpt.CheckpointError as err:  # every checkpoint is damaged: say which file and why
            raise ckpt.CheckpointError(f"train.resume=auto: {err}; repair or delete them (deleting {root} starts "
                                       "the run over), or choose another train.output_dir") from None
    return ckpt.find_checkpoint(Path(spec), required=True)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Run:
    """The pieces of one run that a checkpoint captures."""

    def __init__(self, cfg, d: dd.Dist, run_dir: Path, vocab, loaded, resolved):
        self.cfg, self.d, self.run_dir, self.vocab = cfg, d, run_dir, vocab
        from catlip.methods import build_method

        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.method = build_method(cfg, len(vocab) if vocab is not None else 0, resolved=resolved)
        prepare(self.method, vocab, resuming=loaded is not None)  # what the method asks for (a locked tower, ...)
        self.method = self.method.to(d.device)
        self.model = dd.wrap_model(self.method, cfg.train.distributed, d)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.autocast, self.scaler = _precision(cfg, d.device)
        self.ema = None
        if cfg.train.ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.method, decay=cfg.train.ema_decay)
        self.step, self.samples, self.skipped = 0, 0, {}
        torch.manual_seed(cfg.train.seed * 1000 + 1 + d.rank)  # per-rank stream for dropout / drop-path
        if loaded is not None:
            self._restore(loaded)
        self.forward_model = torch.compile(self.model) if cfg.train.compile else self.model
        self.compiled_once = False
        self.saved_at = self.step
        self.watch = NonFiniteWatch(cfg.train.nonfinite_patience, scaled=self.scaler is not None)

    def step_on(self, micro: list, clip_grad: float) -> dict:
        """One optimizer step. With ``train.compile``, a model that fails to compile on its first step is trained
        without compilation (one line says why) instead of ending the run."""
        try:
            return train_step(self.forward_model, micro, self.optimizer, autocast=self.autocast, scaler=self.scaler,
                              clip_grad=clip_grad)
        except Exception as err:  # noqa: BLE001 - any compiler failure; eager errors are re-raised below
            if self.forward_model is self.model or self.compiled_once:
                raise
            from catlip.errors import one_line

            _say(self.d, f"catlip: torch.compile failed on the first step ({one_line(err)[:300]}); training without "
                         "it (train.compile=false)")
            self.optimizer.zero_grad(set_to_none=True)
            self.forward_model = self.model
            return train_step(self.model, micro, self.optimizer, autocast=self.autocast, scaler=self.scaler,
                              clip_grad=clip_grad)
        finally:
            self.compiled_once = True

    def _restore(self, loaded) -> None:
        ts = loaded.train_state
        dd.load_full_state(self.model, self.optimizer, loaded.model_state, ts["optimizer"])
        if self.ema is not None and loaded.ema_state is not None:
            self.ema.module.load_state_dict(loaded.ema_state)
        if self.scaler is not None and "scaler" in ts:
            self.scaler.load_state_dict(ts["scaler"])
        self.step, self.samples, self.skipped = int(ts["step"]), int(ts["samples_seen"]), dict(ts["skipped"])
        rngs = ts["rng"]
        _set_rng_state(rngs[self.d.rank] if self.d.rank < len(rngs) else rngs[0])

    def _kept(self) -> str:
        if self.saved_at == 0:
            return "the run has no checkpoint yet"
        return f"the last checkpoint, {self.run_dir / 'checkpoints' / f'{ckpt.PREFIX}{self.saved_at:07d}'}, is kept"

    def check_finite(self) -> None:
        """Stop once ``train.nonfinite_patience`` consecutive steps had a NaN/inf loss or gradient norm (one sync;
        every rank stops at the same step)."""
        tripped = self.watch.read()
        if dd.all_mean(float(tripped is not None), self.d) == 0:
            return
        first, last = tripped or ("?", "?")
        raise TrainingDivergedError(f"training diverged: the loss or gradient norm was NaN/inf at steps {first}.."
                                    f"{last} (train.nonfinite_patience={self.watch.patience}); stopped at step "
                                    f"{self.step}; {self._kept()}; lower optim.lr or raise optim.warmup_steps")

    def _check_weights(self) -> None:
        states = {"model": self.method.state_dict()}
        if self.ema is not None:
            states["ema"] = self.ema.module.state_dict()
        bad = None
        for what, state in states.items():  # FSDP: each rank tests its own shards; the ranks agree below
            name = ckpt.first_nonfinite({k: _local(v) for k, v in state.items()})
            if name is not None:
                bad = f"{what} tensor {name!r}"
                break
        if dd.all_mean(float(bad is not None), self.d) > 0:
            raise TrainingDivergedError(f"the weights are NaN/inf at step {self.step} ({bad or 'on another rank'}); "
                                        f"not saved; {self._kept()}; lower optim.lr or raise optim.warmup_steps")

    def save(self, loader) -> None:
        self.check_finite()
        self._check_weights()
        model_state, optim_state = dd.full_state(self.model, self.optimizer)
        rngs = dd.gather_objects(_rng_state(), self.d)
        if self.d.is_main:
            train_state = {"optimizer": optim_state, "step": self.step, "samples_seen": loader.samples_seen,
                           "epoch": loader.epoch, "skipped": dict(loader.stats), "rng": rngs}
            if self.scaler is not None:
                train_state["scaler"] = self.scaler.state_dict()
            meta = {"config": self.cfg.to_dict(), "step": self.step, "epoch": loader.epoch,
                    "samples_seen": loader.samples_seen, "num_classes": len(self.vocab) if self.vocab else 0,
                    "vocab_hash": self.vocab.hash if self.vocab is not None else None,
                    "vocab_size": len(self.vocab) if self.vocab is not None else 0,
                    "method": self.cfg.method.name, "world_size": self.d.world_size,
                    "skipped_samples": dict(loader.stats), "code": ckpt.code_version()}
            ema_state = self.ema.module.state_dict() if self.ema is not None else None
            ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, model_state=model_state,
                                 train_state=train_state, meta=meta, vocab_path=self.run_dir / "vocab.json",
                                 ema_state=ema_state, keep=self.cfg.train.keep_checkpoints)
        dd.barrier(self.d)
        self.saved_at = self.step


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _setup(cfg, vocab, d: dd.Dist, run_dir: Path, resolved):
    if d.is_main:
        for p in ckpt.remove_stale_temporaries(run_dir / "checkpoints"):
            _say(d, f"removed {p.name}, left by an interrupted checkpoint write")
    dd.barrier(d)
    loaded = _resume_point(cfg, run_dir)
    if loaded is not None:
        _resume_changes(cfg, loaded, d)
    if loaded is None and cfg.train.resume == "auto":
        _say(d, f"train.resume=auto: no checkpoint in {run_dir / 'checkpoints'} yet; starting at step 0")
    if loaded is None and ckpt.list_checkpoints(run_dir / "checkpoints"):
        raise ckpt.CheckpointError(f"{run_dir} already holds checkpoints; continue it with train.resume=auto or "
                                   "choose another train.output_dir")
    given = vocab is not None
    if d.is_main:
        if not given:
            vocab = resolve_vocabulary(cfg, run_dir, resuming=loaded is not None, build=True,
                                       progress=cfg.train.progress, resolved=resolved)
            if vocab is not None:
                _tell(d, describe_vocabulary(vocab, vocabulary_origin(cfg, run_dir, loaded is not None, resolved)))
        if loaded is not None:
            ckpt.check_compatible(loaded.meta, cfg.to_dict(), vocab.hash if vocab is not None else None)
        if vocab is not None:
            vocab.save(run_dir / "vocab.json")
        save_config(cfg, run_dir / "config.yaml")
    dd.barrier(d)
    if not d.is_main and not given:
        vocab = resolve_vocabulary(cfg, run_dir, resuming=True, build=False, resolved=resolved)
    return vocab, loaded


def _resume_changes(cfg, loaded, d: dd.Dist) -> None:
    """Say what differs from the checkpoint's config; refuse what breaks an exact resume unless allowed."""
    changes = ckpt.config_changes(loaded.meta, cfg.to_dict())
    for key, old, new in changes:
        _say(d, f"resume: {key} changed: {old!r} -> {new!r}")
    ckpt.check_resume_changes(changes, cfg.train.resume_changes == "allow")


@contextlib.contextmanager
def _run_lock(run_dir: Path, d: dd.Dist):
    """Rank 0 holds the run dir's lock for the whole run (only it writes); every rank stops if it cannot."""
    lock, error = ckpt.RunLock(run_dir) if d.is_main else None, None
    if lock is not None:
        try:
            note = lock.acquire()
        except RunInUseError as err:
            error = str(err)
        else:
            if note:
                _say(d, f"catlip: {note}")
    errors = [e for e in dd.gather_objects(error, d) if e]
    if errors:
        raise RunInUseError(errors[0])
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


class _Signals:
    """Pre-emption signals. Before the first step they end the run at once (nothing new to save); from
    :meth:`defer` on they are only recorded, and the loop acts on them at the next step boundary."""

    def __init__(self):
        self.caught: list[int] = []
        self.deferred = False

    def __call__(self, signum, _frame) -> None:
        if not self.deferred:
            raise RunPreempted(signum)
        self.caught.append(signum)

    def defer(self) -> None:
        self.deferred = True


@contextlib.contextmanager
def _signals():
    handler = _Signals()
    if threading.current_thread() is not threading.main_thread():  # Python handles signals there only
        yield handler
        return
    previous = {s: signal.signal(s, handler) for s in PREEMPT_SIGNALS}
    try:
        yield handler
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _preempted(caught: list, d: dd.Dist, log_step: bool) -> int:
    """The signal to stop for now (0: go on). Under torchrun the ranks agree at log steps only."""
    if not d.enabled:
        return caught[0] if caught else 0
    if not log_step or dd.all_mean(float(bool(caught)), d) == 0:
        return 0
    return caught[0] if caught else int(signal.SIGTERM)


def _say(d: dd.Dist, text: str) -> None:
    if d.is_main:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)


def _tell(d: dd.Dist, text: str) -> None:
    """What the run is (its vocabulary, its towers): stdout, like the run dir at the end; warnings, progress and
    errors go to stderr (_say)."""
    if d.is_main:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stdout)


def _loader(cfg, run: _Run, d: dd.Dist, vocab):
    """The training batches from the run's next sample on: images, or the cached features of the inputs the
    method lets a cache serve (``Method.cached_inputs``)."""
    if run.method.cached_inputs():
        from catlip.train.feature_cache import build_cached_loader

        return build_cached_loader(cfg, run.method, d, start_sample=run.samples)
    from catlip.data import build_train_loader

    return build_train_loader(cfg, vocab, method_inputs=run.method.inputs, rank=d.rank, world_size=d.world_size,
                              start_sample=run.samples)


def pretrain(cfg, vocab=None) -> Path:
    """Train ``cfg`` to ``optim.steps`` (or ``train.stop_after``); returns the run dir. Resumable at any step.

    ``vocab``: use this vocabulary instead of ``data.vocab`` / building one (it is saved into the run dir).
    Raises :class:`RunPreempted` (a SystemExit) after SIGTERM / SIGUSR1 and its checkpoint.
    """
    from catlip.methods.registry import validate_config

    run_dir = Path(cfg.train.output_dir)
    ckpt.check_writable(run_dir)  # before anything else (every rank: they share the run dir)
    resolved = validate_config(cfg)  # the run's one resolution of its method, passed down
    d = dd.init_distributed(cfg.train.device)
    with _run_lock(run_dir, d), _signals() as signals:
        _train(cfg, vocab, d, run_dir, signals, resolved)
    _say(d, f"run dir: {run_dir}")
    dd.cleanup(d)
    return run_dir


def _train(cfg, vocab, d: dd.Dist, run_dir: Path, signals: _Signals, resolved) -> None:
    from catlip.data.loader import batch_size

    for warning in schedule_warnings(cfg):
        _say(d, f"catlip: warning: {warning}")
    vocab, loaded = _setup(cfg, vocab, d, run_dir, resolved)
    run = _Run(cfg, d, run_dir, vocab, loaded, resolved)
    _tell(d, tower_summary(run.method))
    oversized = text_tower_warning(run.method, cfg)
    if oversized:
        _say(d, f"catlip: warning: {oversized}")
    if loaded is not None:
        _say(d, f"resuming from {loaded.path} at step {run.step} (sample {run.samples})")
    loader = _loader(cfg, run, d, vocab)
    loader.stats.update(run.skipped)
    end = min(cfg.optim.steps, cfg.train.stop_after) if cfg.train.stop_after > 0 else cfg.optim.steps
    logger = RunLogger(run_dir, total_steps=end, start_step=run.step, enabled=d.is_main,
                       progress=cfg.train.progress, tensorboard=cfg.train.tensorboard, device=d.device)
    run.method.train()
    batches, losses = iter(loader), []
    signals.defer()
    try:
        while run.step < end:
            micro = [to_device(next(batches), d.device) for _ in range(cfg.optim.grad_accum)]
            lr = lr_at(run.step, cfg.optim)
            set_lr(run.optimizer, lr)
            out = run.step_on(micro, cfg.optim.clip_grad)
            run.step += 1
            run.watch.add(run.step, out)  # keeps the 0-d outputs: no device work, no wait
            if run.ema is not None:
                run.ema.update(run.method, step=run.step)
            losses.append(out["loss"])
            logger.count(sum(batch_size(b) for b in micro) * d.world_size)
            log_step = run.step % cfg.train.log_every == 0 or run.step == end
            if log_step:  # the only place that waits for the device
                _log(logger, run, loader, losses, out, lr)
                losses = []
            if run.step % cfg.train.ckpt_every == 0 or run.step == end:
                run.save(loader)
            signum = _preempted(signals.caught, d, log_step)
            if signum and run.step < end:  # a signal during the last step: the run is done, end it normally
                _stop_for(signum, run, loader)
    finally:
        logger.close()
    if run.saved_at != run.step:
        run.save(loader)
    if loader.stats:
        _say(d, f"skipped {sum(loader.stats.values())} bad samples: {dict(loader.stats)}")


def _log(logger: RunLogger, run: _Run, loader, losses: list, out: dict, lr: float) -> None:
    """One metrics record, then the steps since the last check are tested for NaN/inf (both wait for the device)."""
    extras = {k: float(v) for k, v in out.items() if k != "loss"}
    mean_loss = float(torch.stack(losses).mean())
    logger.log(run.step, {"loss": dd.all_mean(mean_loss, run.d), "lr": lr, **extras, "epoch": loader.epoch,
                          "samples": loader.samples_seen, "skipped": sum(loader.stats.values())})
    run.check_finite()


def _stop_for(signum: int, run: _Run, loader) -> None:
    if run.saved_at != run.step:
        run.save(loader)
    _say(run.d, f"catlip: {signal.Signals(signum).name} at step {run.step}: checkpoint written; continue with "
                f"train.resume=auto (exit code {128 + signum})")
    raise RunPreempted(signum)
