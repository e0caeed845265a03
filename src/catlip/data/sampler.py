"""The sample order: a pure function of (seed, epoch), cheap to resume at any sample.

Epoch ``e`` is a permutation of all sample indices (``torch.randperm`` under a generator seeded from (seed, e)),
cut into *global* batches (per-process batch x world size; the last partial batch is dropped so every step has the
same shape). Each rank takes its contiguous slice of every global batch, so ranks never overlap and the stream
does not depend on the number of DataLoader workers (the DataLoader keeps batch order). With the multi-scale
option (CatLIP Appendix A, after CVNets' variable-batch sampler) every global batch also draws a resolution, and its
batch size is scaled by (base / resolution)^2 so the pixels per batch stay roughly constant.

A resume at ``start_sample`` (global samples consumed) walks the per-epoch batch-size lists, which are computed
without touching any image, and starts at that batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from catlip.errors import DataError


@dataclass(frozen=True)
class BatchSpec:
    indices: tuple[int, ...]  # this rank's sample indices
    epoch: int
    resolution: int
    samples_after: int  # global samples consumed once this batch is done (the resume position)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


class BatchPlan:
    def __init__(self, num_samples: int, batch_size: int, *, seed: int, image_size: int, world_size: int = 1,
                 rank: int = 0, multiscale_sizes: list[int] | None = None):
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.image_size, self.world_size, self.rank = image_size, world_size, rank
        self.sizes = list(multiscale_sizes or [])
        if self.n < self.global_batch(image_size if not self.sizes else max(self.sizes)):
            raise DataError(f"only {self.n} samples: fewer than one global batch "
                            f"({batch_size} x {world_size} processes)")

    def per_rank_batch(self, resolution: int) -> int:
        if not self.sizes:
            return self.batch_size
        return max(1, round(self.batch_size * (self.image_size / resolution) ** 2))

    def global_batch(self, resolution: int) -> int:
        return self.per_rank_batch(resolution) * self.world_size

    def epoch_batches(self, epoch: int) -> list[int]:
        """Resolutions of the global batches of ``epoch`` (their sizes follow from the resolution)."""
        if not self.sizes:
            return [self.image_size] * (self.n // self.global_batch(self.image_size))
        rng = random.Random(f"catlip-multiscale:{self.seed}:{epoch}")
        out, left = [], self.n
        while True:
            res = rng.choice(self.sizes)
            if self.global_batch(res) > left:
                return out
            out.append(res)
            left -= self.global_batch(res)

    def epoch_length(self, epoch: int) -> int:
        return sum(self.global_batch(r) for r in self.epoch_batches(epoch))

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def locate(self, start_sample: int) -> tuple[int, int, int]:
        """(epoch, batch number in epoch, samples consumed before that epoch) for a global position."""
        epoch, before = 0, 0
        while True:
            length = self.epoch_length(epoch)
            if start_sample < before + length:
                break
            before += length
            epoch += 1
        offset = start_sample - before
        for b, res in enumerate(self.epoch_batches(epoch)):
            if offset == 0:
                return epoch, b, before
            offset -= self.global_batch(res)
            if offset < 0:
                break
        raise DataError(f"resume position {start_sample} is not on a batch boundary (did the batch size or the "
                        "number of processes change?)")

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_sample: int):
        epoch, first, pos = self.locate(start_sample)
        while True:
            perm = self.permutation(epoch)
            offset = 0
            for b, res in enumerate(self.epoch_batches(epoch)):
                g = self.global_batch(res)
                if b >= first:
                    per = g // self.world_size
                    mine = perm[offset + self.rank * per: offset + (self.rank + 1) * per]
                    yield BatchSpec(tuple(mine.tolist()), epoch, res, pos + offset + g)
                offset += g
            pos += offset
            epoch, first = epoch + 1, 0
