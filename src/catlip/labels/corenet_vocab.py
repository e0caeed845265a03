"""The released CatLIP vocabulary (corenet's pickle) as a catlip :class:`~catlip.labels.vocab.Vocabulary`.

corenet writes its synset vocabulary as a pickled ``dict`` ``{"n<offset>": count}`` in count order, with the
WordNet 3.0 offset *not* zero-padded (``n2084071`` where ImageNet and catlip write ``n02084071``); class i of the
released head is the i-th key. A pickle is a program, so it is read by :class:`PlainUnpickler`, which builds
only what pickle's own opcodes make (dicts, lists, str, int, float) and refuses every import: a file that would
run code fails before anything of it runs.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

from catlip.errors import VocabularyError

MAX_BYTES = 256 << 20  # the released 24k-synset file is well under 1 MB; a huge file is not a vocabulary


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain containers only; any global (class, function) the stream names is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a vocabulary pickle holds a dict only")


def read_pickle(path: str | Path) -> dict:
    """The released pickle's dict, or a one-line VocabularyError (never executes the file's code)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise VocabularyError(f"{path}: cannot read the vocabulary ({err.strerror or err})") from None
    if len(data) > MAX_BYTES:
        raise VocabularyError(f"{path}: {len(data):,} bytes is too large for a synset vocabulary pickle")
    try:
        obj = PlainUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        raise VocabularyError(f"{path}: {str(err).splitlines()[0][:160]}; nothing of it was run") from None
    except Exception as err:  # a truncated or garbled pickle raises many types (EOFError, KeyError, ...)
        raise VocabularyError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise VocabularyError(f"{path}: expected a pickled dict of synset -> count, got {type(obj).__name__}")
    return obj


def synset_key(raw, wordnet, path: Path, index: int) -> str:
    """catlip's key (``n`` + 8-digit offset) of corenet's key, checked against WordNet 3.0's nouns."""
    m = re.fullmatch(r"n(\d{1,8})", raw) if isinstance(raw, str) else None
    if m is None:
        raise VocabularyError(f"{path}: entry {index} ({raw!r}) is not a noun synset key n<offset>")
    key = "n%08d" % int(m.group(1))
    try:
        wordnet.synset_lemmas(key)
    except KeyError:
        raise VocabularyError(f"{path}: entry {index} ({raw!r}) is no noun synset of WordNet 3.0") from None
    return key


def load_corenet_vocab(path: str | Path, num_classes: int, wordnet=None):
    """The first ``num_classes`` entries of a released vocabulary pickle as a synsets Vocabulary (corenet style)."""
    from catlip.labels.vocab import Vocabulary
    from catlip.labels.wordnet import get_wordnet

    path = Path(path)
    table = read_pickle(path)
    if len(table) < num_classes:
        raise VocabularyError(f"{path}: {len(table):,} entries, but the checkpoint's head has {num_classes:,} "
                              "classes: this vocabulary does not belong to that checkpoint")
    wn = wordnet or get_wordnet()
    items = list(table.items())[:num_classes]
    keys = [synset_key(raw, wn, path, i) for i, (raw, _) in enumerate(items)]
    counts = []
    for i, (raw, count) in enumerate(items):
        if isinstance(count, bool) or not isinstance(count, (int, float)) or count < 0:
            raise VocabularyError(f"{path}: entry {i} ({raw!r}) has count {count!r}, not a non-negative number")
        counts.append(int(count))
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise VocabularyError(f"{path}: synset {dup} occurs twice (as padded and unpadded keys)")
    return Vocabulary(labels="synsets", options={"proper_nouns": False, "style": "corenet"}, keys=keys,
                      counts=counts, names=[wn.name(k) for k in keys], glosses=[wn.gloss(k) for k in keys],
                      num_captions=0, stats={"imported_from": path.name, "entries_in_file": len(table)})
