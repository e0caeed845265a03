"""Library side of `catlip labels` and `catlip vocab` (the CLI handlers only parse arguments and call these)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from catlip.labels import get_extractor
from catlip.labels.corpus import ReadStats, expand_inputs, iter_captions
from catlip.labels.vocab import PartialCounts, Vocabulary, build_vocabulary


def print_labels(captions: list[str], method: str, options: dict, out: TextIO | None = None) -> None:
    """One block per caption: the caption, then `key  name` per label."""
    out = out or sys.stdout
    ex = get_extractor(method, **options)
    for caption in captions:
        print(caption, file=out)
        keys = ex.extract(caption)
        for key in keys:
            print(f"  {key:>10}  {ex.name(key)}", file=out)
        if not keys:
            print("  (no labels)", file=out)
        print(file=out)


def label_file(src: str | Path, dst: str | Path | None, method: str, options: dict, *, column: str | None = None,
               progress: bool = True) -> tuple[int, ReadStats]:
    """Write `{"caption": ..., "labels": [...]}` per caption of `src` as JSON lines (stdout when dst is None)."""
    from tqdm import tqdm

    ex = get_extractor(method, **options)
    stats = ReadStats()
    n = 0
    out = open(dst, "w", encoding="utf-8") if dst else sys.stdout
    try:
        samples = iter_captions(src, column=column, stats=stats)
        for captions in tqdm(samples, unit=" samples", desc="labelling", disable=not progress or dst is None):
            for caption in captions:
                out.write(json.dumps({"caption": caption, "labels": ex.extract(caption)}, ensure_ascii=False) + "\n")
                n += 1
    except BrokenPipeError:
        # stdout closed early (`... | head`): stop quietly; point stdout at /dev/null so exit does not complain
        if dst is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        else:
            raise
    finally:
        if dst:
            out.close()
    return n, stats


def summarize_build(vocab: Vocabulary, counts: PartialCounts) -> str:
    s = vocab.stats
    lines = [f"captions read:     {vocab.num_captions:,} ({s['samples']:,} samples from {len(s['sources'])} file(s))",
             f"unique keys:       {s['unique_keys']:,}",
             f"kept keys:         {len(vocab):,} (min count {s['min_count']}"
             + (f", top {s['top_k']})" if s["top_k"] else ")")]
    covered = s.get("captions_with_kept_label")
    if covered is not None and vocab.num_captions:
        lines.append(f"captions with >= 1 kept label: {covered / vocab.num_captions:.2%} "
                     f"(any label: {s['captions_with_label'] / vocab.num_captions:.2%})")
    lines.append(f"lines skipped:     {counts.read.skipped:,}")
    lines += [f"  {m}" for m in counts.read.messages[:5]]
    return "\n".join(lines)


def build_and_save(inputs: list[str], output: str, method: str, options: dict, *, min_count: int,
                   top_k: int | None, workers: int, column: str | None) -> str:
    """Build a vocabulary, save it, and return the printable summary."""
    vocab, counts = build_vocabulary(expand_inputs(inputs), method, options, min_count=min_count, top_k=top_k,
                                     workers=workers, column=column, progress=True)
    vocab.save(output)
    return summarize_build(vocab, counts) + f"\nwrote {output} ({len(vocab):,} classes, hash {vocab.hash})"


def format_vocab(vocab: Vocabulary, top: int = 20) -> str:
    """Header plus the `top` most frequent classes as a table."""
    share = f"{vocab.num_captions:,} captions" if vocab.num_captions else "no caption counts"
    lines = [f"{vocab.method} vocabulary: {len(vocab):,} classes, {share}, options {vocab.options}, "
             f"hash {vocab.hash}",
             f"{'id':>6}  {'key':>10}  {'count':>9}  name — gloss"]
    for i in range(min(top, len(vocab))):
        gloss = vocab.glosses[i]
        gloss = (" — " + (gloss[:60] + "…" if len(gloss) > 60 else gloss)) if gloss else ""
        lines.append(f"{i:>6}  {vocab.keys[i]:>10}  {vocab.counts[i]:>9,}  {vocab.names[i]}{gloss}")
    return "\n".join(lines)
