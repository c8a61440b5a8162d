"""Reading a corpus: files or folders of UTF-8 .txt, checked, cleaned and normalised, split for validation.

Cleaning works on paragraphs (blocks between blank lines) whatever the line-break rule, so a bundle
that keeps line breaks and one that reflows them read the same words:
- front matter (title page, contents, lists of illustrations) before the first paragraph of prose goes;
- back matter after a closing "THE END" (publishers' adverts) goes;
- [Illustration: ...] captions and paragraphs with no lower-case letter (headings) go;
- paragraphs holding a blocked word (model/safety.py) go, so the model seldom learns them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from model.safety import WordFilter
from model.vocab import Normalisation

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_WHITESPACE = re.compile(r"\s+")


class CorpusError(ValueError):
    """The corpus cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CorpusFile:
    name: str
    sha256: str
    text: str
    dropped: dict = field(default_factory=dict)  # chars removed by cleaning, by reason

    @property
    def words(self) -> int:
        return len(self.text.split())


_SENTENCE_END = re.compile(r"[a-z][.!?]['\"]?(\s|$)")
_THE_END = re.compile(r"^\W*the end\W*$", re.IGNORECASE)


def split_paragraphs(text: str) -> list[str]:
    """A book's blocks of text between blank lines, without their surrounding whitespace."""
    return [p for p in (b.strip() for b in _BLANK_LINES.split(text)) if p]


def join_paragraphs(blocks: list[str], unwrap: bool) -> str:
    """Unwrapped: one line per paragraph, since a book's single line breaks are the printer's hard
    wraps (a member's line break, by contrast, is a paragraph break). Else the lines as printed."""
    return "\n".join(_WHITESPACE.sub(" ", b) for b in blocks) if unwrap else "\n\n".join(blocks)


def is_prose(block: str) -> bool:
    """A paragraph of story: long, mostly lower case, with at least two sentence ends."""
    letters = [c for c in block if c.isalpha()]
    return (len(block) >= 200 and sum(c.islower() for c in letters) >= 0.8 * len(letters)
            and len(_SENTENCE_END.findall(block)) >= 2)


def clean(text: str, word_filter: WordFilter | None) -> tuple[list[str], dict]:
    """The paragraphs worth learning from, and how many chars each rule removed."""
    blocks = split_paragraphs(text)
    dropped = {"front_matter": 0, "back_matter": 0, "captions_and_headings": 0, "blocked_words": 0}
    start = next((i for i, b in enumerate(blocks) if is_prose(b)), 0)
    if sum(map(len, blocks[:start])) > 0.2 * len(text):  # no prose found early: keep all rather than guess
        start = 0
    end, after = len(blocks), 0
    for i in range(len(blocks) - 1, start, -1):  # a closing "THE END" within the last 15% of the text
        if _THE_END.match(blocks[i]) or blocks[i].strip("[]_ ").lower().endswith("illustration: the end"):
            end = i
            break
        after += len(blocks[i])
        if after > 0.15 * len(text):
            break
    dropped["front_matter"] = sum(map(len, blocks[:start]))
    dropped["back_matter"] = sum(map(len, blocks[end:]))
    kept = []
    for block in blocks[start:end]:
        if block.startswith("[") and block.endswith("]") or not any(c.islower() for c in block):
            dropped["captions_and_headings"] += len(block)
        elif word_filter is not None and word_filter.find(block):
            dropped["blocked_words"] += len(block)
        else:
            kept.append(block)
    return kept, dropped


def find_text_files(paths) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CorpusError(f"corpus path does not exist: {path}")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise CorpusError(f"corpus folder has no .txt files: {path}")
            files.extend(found)
        else:
            files.append(path)
    return files


def read_file(path: Path, encoding: str, normalisation: Normalisation,
              word_filter: WordFilter | None = None) -> CorpusFile:
    data = path.read_bytes()
    if not data.strip():
        raise CorpusError(f"corpus file is empty: {path}")
    if b"\x00" in data[:65536]:
        raise CorpusError(f"corpus file looks binary (it holds NUL bytes), not text: {path}")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not valid {encoding}: byte {e.start} (0x{data[e.start]:02x}) "
                          f"cannot be decoded; convert it or pass --encoding (e.g. latin-1)") from None
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    # The one normalisation: line endings and typography; the cleaned paragraphs are then joined the
    # model's way, which leaves the text as `normalisation.apply` would (its output is a fixed point).
    text = Normalisation(normalisation.typography).apply(text.lstrip("\ufeff"))
    blocks, dropped = clean(text, word_filter)
    if not blocks:
        raise CorpusError(f"corpus file has no text left after cleaning: {path}")
    return CorpusFile(path.name, hashlib.sha256(data).hexdigest(),
                      join_paragraphs(blocks, normalisation.paragraphs), dropped)


def read_corpus(paths, normalisation: Normalisation, encoding: str = "utf-8",
                word_filter: WordFilter | None = None) -> list[CorpusFile]:
    return [read_file(p, encoding, normalisation, word_filter) for p in find_text_files(paths)]


def split(text: str, val_fraction: float) -> tuple[str, str]:
    """The last `val_fraction` of a file is its validation block, so no training window overlaps it."""
    cut = len(text) - int(round(len(text) * val_fraction))
    return text[:cut], text[cut:]
