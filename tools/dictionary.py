"""Writes model/words.txt, the word filter's dictionary of real words (model/safety.py reads it).

    python -m tools.dictionary --corpus ../shared/corpus/fantasy ../shared/corpus/library \
        --standard /usr/share/dict/words      # Debian's wamerican

A word is real when the standard list has it, or when the training corpus uses it at least twice and
no listed word of five letters or more hides inside it (so an old book's "niggeress" never makes a
made-up slur pass). Short listed words hide in innocent ones too often to rule those out:
"twopence", Oz's "Woggle-Bug" and "Growleywogs", "unsuspicious".
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from model.safety import DICTIONARY, hides_a_word, shipped_words
from train.corpus import find_text_files

LETTERS = re.compile(r"[a-z]+")
MIN_CORPUS_COUNT = 2  # a word seen once may be a misprint
LONG_LISTED = 5  # letters: a listed word this long inside a corpus word leaves that word out


def standard_words(path: Path) -> set[str]:
    """Entries of plain letters only ("Aachen's" and the like are left out), lower case."""
    return {w.lower() for w in path.read_text(encoding="utf-8", errors="replace").split() if w.isalpha()
            and w.isascii()}


def corpus_words(paths) -> Counter:
    counts: Counter = Counter()
    for path in find_text_files(paths):
        counts.update(LETTERS.findall(path.read_text(encoding="utf-8").lower()))
    return counts


def build(corpus, standard: Path) -> set[str]:
    long_listed = frozenset(w for w in shipped_words() if len(w) >= LONG_LISTED)
    counts = corpus_words(corpus)
    return standard_words(standard) | {w for w, n in counts.items() if n >= MIN_CORPUS_COUNT
                                       and not hides_a_word(w, long_listed)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", nargs="+", required=True, metavar="PATH")
    parser.add_argument("--standard", type=Path, default=Path("/usr/share/dict/words"), metavar="FILE")
    parser.add_argument("--out", type=Path, default=DICTIONARY)
    args = parser.parse_args(argv)
    words = build(args.corpus, args.standard)
    tmp = args.out.with_name(f".tmp-{args.out.name}")
    tmp.write_text("\n".join(sorted(words)) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"{len(words):,} words written to {args.out}")


if __name__ == "__main__":
    main()
