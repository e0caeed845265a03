"""Stream captions from many files through a label extractor, one file per worker process.

Workers only return small partial statistics (counts, first-seen indices); they are merged in input order, so
the result does not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field

from catlip.analysis.stats import CorpusStats


@dataclass(frozen=True)
class ScanOptions:
    method: str = "catlip"
    extractor_options: tuple = ()  # sorted (name, value) pairs: hashable, picklable
    column: str | None = None
    unlabelled_keep: int = 20
    seed: int = 0


@dataclass
class ScanResult:
    stats: CorpusStats
    files: list = field(default_factory=list)  # [{"path", "samples", "captions", "skipped"}]




_EXTRACTORS: dict = {}


def _extractor(options: ScanOptions):
    # One extractor per process and configuration: building it loads WordNet and the tagger tables.
    key = (options.method, repr(options.extractor_options))  # repr: option values may be lists
    if key not in _EXTRACTORS:
        from catlip.labels import get_extractor

        _EXTRACTORS[key] = get_extractor(options.method, **dict(options.extractor_options))
    return _EXTRACTORS[key]


def scan_file(path: str, file_index: int, options: ScanOptions, on_progress=None) -> tuple[CorpusStats, dict]:
    """Statistics of one caption file or shard; ``on_progress(captions_so_far)`` every 5,000 samples."""
    from catlip.labels.corpus import ReadStats, iter_captions

    extractor = _extractor(options)
    stats = CorpusStats(unlabelled_keep=options.unlabelled_keep, seed=options.seed)
    read = ReadStats()
    for number, captions in enumerate(iter_captions(path, column=options.column, stats=read)):
        stats.add_sample([extractor.extract(c) for c in captions], captions, sample_id=f"{file_index}:{number}")
        if on_progress is not None and number % 5000 == 4999:
            on_progress(stats.num_captions)
    if read.skipped:
        stats.skipped[path] = read.skipped
    info = {"path": path, "samples": stats.num_samples, "captions": stats.num_captions,
            "skipped": read.skipped, "skip_messages": read.messages[:5]}
    return stats, info


def _scan_job(job):
    return scan_file(*job)


def scan(files: list[str], options: ScanOptions, workers: int = 1, progress: bool = True) -> ScanResult:
    """Scan ``files`` with up to ``workers`` processes (in-process when 1), merging in input order."""
    from catlip.progress import progress_bar

    jobs = [(path, i, options) for i, path in enumerate(files)]
    total = CorpusStats(unlabelled_keep=options.unlabelled_keep, seed=options.seed)
    result = ScanResult(total)
    bar = progress_bar(total=len(jobs), unit="file", desc="analyze", disable=not progress)
    workers = max(1, min(workers, len(jobs)))
    pool = None
    if workers > 1:
        # fork shares the already parsed WordNet map with the children; spawn elsewhere
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
    try:
        if pool:
            parts = pool.imap(_scan_job, jobs)
        else:  # in-process: also report progress inside a file (one big captions file is common)
            def inner(n):
                bar.set_postfix_str(f"{total.num_captions + n:,} captions")

            parts = (scan_file(*job, on_progress=inner) for job in jobs)
        for stats, info in parts:
            total.merge(stats)
            result.files.append(info)
            bar.update(1)
            bar.set_postfix_str(f"{total.num_captions:,} captions, {len(total.caption_counts):,} synsets")
    except BaseException:
        if pool:
            pool.terminate()
        raise
    finally:
        bar.close()
        if pool:
            pool.close()
            pool.join()
    return result
