"""Two gloo processes under DDP equal one process on the concatenated batch (CLIP/LiT loss/gradients, SuperClass IDF)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_methods import V, tiny_batch, tiny_config  # noqa: E402

from catlip.methods import build_method  # noqa: E402

WORLD = 2
pytestmark = pytest.mark.slow


def _run_step(method_name: str, batch: dict[str, torch.Tensor], ddp: bool) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = build_method(tiny_config(method_name), V)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    out = wrapped(batch)
    out["loss"].backward()
    return model, out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        full = tiny_batch(8, seed=5)
        local = {k: v.chunk(WORLD)[rank].contiguous() for k, v in full.items()}
        results = {}
        for name in ("clip", "siglip", "superclass", "lit"):
            model, out = _run_step(name, local, ddp=True)
            res = {"loss": out["loss"].detach()}
            # LiT's locked image tower takes no gradient: its parameters have none on any rank
            res.update({f"grad.{n}": p.grad.detach().clone() for n, p in model.named_parameters()
                        if p.grad is not None})
            if name == "superclass":
                res["doc_freq"], res["num_docs"] = model.idf.doc_freq.clone(), model.idf.num_docs.clone()
            else:
                for key in ("image_features", "text_features"):
                    gathered = [torch.empty_like(out[key]) for _ in range(WORLD)]
                    dist.all_gather(gathered, out[key].detach().contiguous())
                    res[key] = torch.cat(gathered)
            results[name] = res
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_on_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    # fork: the children inherit the already-imported torch/timm/open_clip instead of paying ~8 s each to import.
    mp.start_processes(_worker, args=(str(tmp_path / "pg_init"), str(tmp_path)), nprocs=WORLD, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    full = tiny_batch(8, seed=5)
    for name in ("clip", "siglip", "superclass", "lit"):
        model, out = _run_step(name, full, ddp=False)
        for res in ranks:
            if name != "superclass":  # contrastive losses are computed over the gathered global batch on each rank
                assert res[name]["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-5)
            graded = {n for n, p in model.named_parameters() if p.grad is not None}
            assert graded == {k[len("grad."):] for k in res[name] if k.startswith("grad.")}, name
            assert (name == "lit") == any(n.startswith("backbone.") for n, p in model.named_parameters()
                                          if p.grad is None), name
            for n in graded:
                p = model.get_parameter(n)
                assert torch.allclose(res[name][f"grad.{n}"], p.grad, rtol=1e-4, atol=1e-6), (name, n)
        if name == "superclass":
            # Each rank's local loss differs, but their mean is the global loss and the IDF counts are global.
            mean_loss = sum(r[name]["loss"] for r in ranks) / WORLD
            assert mean_loss.item() == pytest.approx(out["loss"].item(), rel=1e-5)
            for res in ranks:
                assert torch.equal(res[name]["doc_freq"], model.idf.doc_freq)
                assert res[name]["num_docs"].item() == model.idf.num_docs.item() == 8
        else:
            for res in ranks:
                for key in ("image_features", "text_features"):
                    assert torch.allclose(res[name][key], out[key].detach(), atol=1e-6)
