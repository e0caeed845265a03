"""Library side of `catlip labels` and `catlip vocab` (the CLI handlers only parse arguments and call these)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from catlip.errors import CliError
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
    """Write `{"caption": ..., "labels": [...]}` per caption of `src` as JSON lines (stdout when dst is None).

    `dst` is written atomically: a failed run (a full disk, a bad input) leaves no partial file and no temp.
    """
    from catlip.progress import progress_bar

    ex = get_extractor(method, **options)
    stats = ReadStats()
    samples = iter_captions(src, column=column, stats=stats)
    if dst is None:
        return _label_to_stdout(_label_lines(ex, samples)), stats
    n = 0
    with _atomic_text(Path(dst)) as out:
        for count, text in _label_lines(ex, progress_bar(samples, unit="sample", desc="labelling", disable=not progress)):
            with _writing(str(dst)):  # the write only: an OSError of the input is the reader's to report
                out.write(text)
            n += count
    return n, stats


def _label_lines(ex, samples: Iterable[list[str]]) -> Iterator[tuple[int, str]]:
    """(number of captions, their JSON lines) per sample."""
    for captions in samples:
        yield len(captions), "".join(json.dumps({"caption": c, "labels": ex.extract(c)}, ensure_ascii=False) + "\n"
                                     for c in captions)


def _label_to_stdout(lines: Iterator[tuple[int, str]]) -> int:
    n = 0
    try:
        for count, text in lines:
            with _writing("stdout"):
                sys.stdout.write(text)
            n += count
        with _writing("stdout"):
            sys.stdout.flush()  # a full disk behind `>` shows up here for a short output, not at exit
    except (BrokenPipeError, CliError) as err:
        # point stdout at /dev/null so that its flush at exit does not fail (and print) a second time
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(err, CliError):
            raise
        # BrokenPipeError: stdout was closed early (`... | head`); stop quietly
    return n


@contextmanager
def _writing(where: str) -> Iterator[None]:
    """Write errors in the block (a full disk, a missing folder) become one-line errors naming ``where``."""
    try:
        yield
    except BrokenPipeError:
        raise  # a reader that stopped reading is not an error of ours
    except OSError as err:
        raise CliError(f"cannot write {where}: {err.strerror or err}") from None


@contextmanager
def _atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file that becomes ``path`` (a rename in its folder) only once complete; removed on any failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _writing(str(path)):
        out = open(tmp, "w", encoding="utf-8")
    try:
        yield out
        with _writing(str(path)):
            out.close()  # flushes: a full disk may show up only here
            os.replace(tmp, path)
    except BaseException:
        try:
            out.close()  # its flush fails again on a full disk; the first error is the one to report
        except OSError:
            pass
        tmp.unlink(missing_ok=True)
        raise


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
    if vocab.num_captions:
        share = f"{vocab.num_captions:,} captions"
    elif any(vocab.counts):  # an imported vocabulary (catlip import corenet): counts, but no caption total
        share = f"counts from {vocab.stats.get('imported_from', 'elsewhere')}, caption total unknown"
    else:
        share = "no caption counts"
    lines = [f"{vocab.method} vocabulary: {len(vocab):,} classes, {share}, options {vocab.options}, "
             f"hash {vocab.hash}",
             f"{'id':>6}  {'key':>10}  {'count':>9}  name — gloss"]
    for i in range(min(top, len(vocab))):
        gloss = vocab.glosses[i]
        gloss = (" — " + (gloss[:60] + "…" if len(gloss) > 60 else gloss)) if gloss else ""
        lines.append(f"{i:>6}  {vocab.keys[i]:>10}  {vocab.counts[i]:>9,}  {vocab.names[i]}{gloss}")
    return "\n".join(lines)
