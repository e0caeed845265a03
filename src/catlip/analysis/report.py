"""summary.json and a one-page, self-contained index.html (inline CSS, relative image paths, tables).

Every number shown in the HTML carries ``data-key="<dotted path into summary.json>"`` so a test (or a reader)
can check the page against the JSON.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:1.8em}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 8px;font-size:0.9em}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:0.9em}code{background:#f6f6f6;padding:0 3px}.warn{color:#a33}
"""


MAX_CLASS_ROWS = 1000  # ImageNet-22k would make a 12 MB page; the JSON keeps every class


def write_json(path: Path, data: dict) -> None:
    """Atomic write: a crash never leaves half a summary behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".summary.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a report is meant to be shared
    os.replace(tmp, path)


def fmt(value) -> str:
    """How numbers appear on the page: ints with thousands separators, shares as percentages (1 decimal)."""
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return html.escape(str(value))


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _num(key: str, value, share: bool = False) -> str:
    text = pct(value) if share else fmt(value)
    kind = "share" if share else "value"
    return f'<td class="n" data-key="{html.escape(key)}" data-kind="{kind}">{text}</td>'


def _text(value) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>" + "".join(f"<tr>{r}</tr>" for r in rows) + "</table>"


def _img(name: str, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'


def _corpus_section(s: dict) -> str:
    c = s["corpus"]
    rows = [
        ("input files", "corpus.num_files", False), ("samples", "corpus.num_samples", False),
        ("captions", "corpus.num_captions", False), ("captions with >= 1 label", "corpus.num_labelled_captions", False),
        ("captions without label", "corpus.num_unlabelled_captions", False),
        ("share of captions without label", "corpus.unlabelled_share", True),
        ("label occurrences (caption, synset)", "corpus.label_occurrences", False),
        ("labels per caption (mean)", "corpus.labels_per_caption", False),
        ("unique synsets", "corpus.unique_synsets", False),
        ("synsets seen in one caption only", "corpus.singleton_synsets", False),
        ("skipped samples / lines", "corpus.skipped_total", False),
    ]
    body = [_text(label) + _num(key, c[key.split(".")[1]], share) for label, key, share in rows]
    files = ", ".join(f"<code>{html.escape(Path(f['path']).name)}</code>" for f in s["files"][:20])
    more = f" and {len(s['files']) - 20} more" if len(s["files"]) > 20 else ""
    ext = s["extractor"]
    return (f"<h2 id=corpus>Corpus</h2><p class=note>Inputs: {files}{more}. {html.escape(s.get('input_note', ''))}"
            f"<br>Labels: <code>{html.escape(ext['method'])}</code> extractor, options "
            f"<code>{html.escape(json.dumps(ext['options']))}</code>.</p>" + _table(["statistic", "value"], body))


def _distribution_section(s: dict) -> str:
    p = s["plots"]
    vt = [_num(f"vtau.{i}.tau", r["tau"]) + _num(f"vtau.{i}.vocab_size", r["vocab_size"])
          + _num(f"vtau.{i}.occurrences_kept", r["occurrences_kept"]) + _num(f"vtau.{i}.share_kept", r["share_kept"], True)
          for i, r in enumerate(s["vtau"])]
    return ("<h2 id=distribution>Synset distribution</h2><div class=plots>" + _img(p["long_tail"], "long tail")
            + _img(p["growth"], "growth") + "</div><div class=plots>" + _img(p["vtau"], "V_tau") + "</div>"
            "<p class=note>V_tau keeps the synsets with count &ge; V_tau (counts are captions containing the "
            "synset).</p>" + _table(["V_tau", "vocabulary size", "occurrences kept", "share kept"], vt))


def _target_section(s: dict) -> str:
    if not s["targets"]:
        return ""
    out = ["<h2 id=targets>Target label sets</h2><p class=note>Each target class is mapped to a synset (wnid as given, or "
           "its name: collocation, morphy, first noun sense); its best corpus synset is the one with the highest "
           "WordNet path similarity 1/(d+1), d = hops through the nearest common hypernym. Path similarity only "
           "takes the values 1, 1/2, 1/3, ...: every alpha in (0.5, 1] means an exact match.</p>"]
    if s["plots"].get("coverage"):
        out.append("<div class=plots>" + _img(s["plots"]["coverage"], "coverage") + "</div>")
    for i, t in enumerate(s["targets"]):
        out.append(f"<h3>{html.escape(t['name'])}</h3><p class=note>Source: <code>{html.escape(t['source'])}</code>"
                   f". Matched against {fmt(t['corpus_synsets'])} corpus synsets "
                   f"({html.escape(t['corpus_synsets_rule'])}).</p>")
        head = [_text("classes") + _num(f"targets.{i}.num_targets", t["num_targets"]),
                _text("classes mapped to a synset") + _num(f"targets.{i}.num_resolved", t["num_resolved"]),
                _text("classes unknown to WordNet") + _num(f"targets.{i}.num_unknown", t["num_unknown"])]
        out.append(_table(["", "count"], head))
        cov = [_num(f"targets.{i}.coverage.{j}.alpha", r["alpha"]) + _num(f"targets.{i}.coverage.{j}.matched", r["matched"])
               + _num(f"targets.{i}.coverage.{j}.share", r["share"], True) for j, r in enumerate(t["coverage"])]
        out.append(_table(["alpha", "classes matched", "share of classes"], cov))
        if t["unknown"]:
            out.append("<p class=warn>Unknown classes (no WordNet noun synset): "
                       + ", ".join(html.escape(u) for u in t["unknown"]) + "</p>")
        sp = t["samples_per_target"]
        out.append(_table(["matched classes", "count", "median samples", "mean samples"], [
            _text(label) + _num(f"targets.{i}.samples_per_target.{k}.classes", sp[k]["classes"])
            + _num(f"targets.{i}.samples_per_target.{k}.median", sp[k]["median"])
            + _num(f"targets.{i}.samples_per_target.{k}.mean", sp[k]["mean"])
            for label, k in (("exact (alpha = 1)", "exact"), (f"alpha >= {sp['loose_alpha']:g}", "loose"))]))
        if t.get("plot"):
            out.append("<div class=plots>" + _img(t["plot"], "samples per target") + "</div>")
        rows = [_num(f"targets.{i}.matches.{j}.index", m["index"]) + _text(m["name"]) + _text(m["wnid"] or "-")
                + _text(m["how"]) + _text(m["best_name"] or "-") + _text(m["best_key"] or "-")
                + _num(f"targets.{i}.matches.{j}.similarity", m["similarity"])
                + _num(f"targets.{i}.matches.{j}.samples", m["samples"])
                for j, m in enumerate(t["matches"][:MAX_CLASS_ROWS])]
        table = _table(["#", "class", "wnid", "mapped by", "best corpus synset", "key", "path sim.", "samples"], rows)
        shown = (f"all {len(rows)} classes" if len(rows) == len(t["matches"]) else
                 f"the first {len(rows)} of {len(t['matches'])} classes (all are in summary.json)")
        if len(rows) > 30:
            table = f"<details><summary>{shown} and their best match</summary>{table}</details>"
        out.append(table)
    return "".join(out)


def _top_section(s: dict) -> str:
    rows = [_num(f"top_synsets.{i}.rank", r["rank"]) + _text(r["key"]) + _text(r["name"]) + _text(", ".join(r["lemmas"]))
            + _num(f"top_synsets.{i}.captions", r["captions"]) + _num(f"top_synsets.{i}.samples", r["samples"])
            for i, r in enumerate(s["top_synsets"])]
    return "<h2 id=top>Most frequent synsets</h2>" + _table(["rank", "key", "name", "lemmas", "captions", "samples"], rows)


def _unlabelled_section(s: dict) -> str:
    items = "".join(f"<li>{html.escape(c)}</li>" for c in s["unlabelled_examples"])
    return (f"<h2 id=unlabelled>Captions without labels</h2><p class=note>A seeded sample (seed {s['options']['seed']}) of "
            f"the captions from which no synset was extracted.</p><ol>{items or '<li><i>none</i></li>'}</ol>")


def write_html(path: Path, s: dict) -> None:
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(s['title'])}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(s['title'])}</h1>"
            f"<p class=note>Generated by catlip {html.escape(s['catlip_version'])} (<code>catlip analyze</code>). "
            "Numbers below are read from <a href=summary.json>summary.json</a>.</p>"
            + _corpus_section(s) + _distribution_section(s) + _target_section(s) + _top_section(s)
            + _unlabelled_section(s) + "</body></html>\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
