"""Reading a corpus: files or folders of UTF-8 .txt, checked and normalised, split for validation."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from model.vocab import normalise


class CorpusError(ValueError):
    """The corpus cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CorpusFile:
    name: str
    sha256: str
    text: str


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


def read_file(path: Path, encoding: str, typography: bool) -> CorpusFile:
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
    return CorpusFile(path.name, hashlib.sha256(data).hexdigest(), normalise(text.lstrip("\ufeff"), typography))


def read_corpus(paths, encoding: str = "utf-8", typography: bool = True) -> list[CorpusFile]:
    return [read_file(p, encoding, typography) for p in find_text_files(paths)]


def split(text: str, val_fraction: float) -> tuple[str, str]:
    """The last `val_fraction` of a file is its validation block, so no training window overlaps it."""
    cut = len(text) - int(round(len(text) * val_fraction))
    return text[:cut], text[cut:]
