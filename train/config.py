"""Training hyper-parameters: one plain object, defaults equal to the seed recipe.

A recipe file (TOML, `train/recipes/`) sets any of them plus the corpus, so a shipped model is
reproduced by one command; options given on the command line override the recipe.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class TrainConfig:
    # May change on --resume:
    RESUMABLE = ("epochs", "max_steps", "minutes", "learning_rate", "schedule", "patience", "average_epochs")

    seq_length: int = 100
    batch_size: int = 64
    embedding: int = 300
    units: tuple[int, ...] = (512, 256)
    cell: str = "gru"
    dropout: float = 0.0
    learning_rate: float = 1e-3
    clipnorm: float = 0.0  # 0: no gradient clipping (the seed clips nothing)
    epochs: int = 50
    max_steps: int = 0  # 0: no limit
    minutes: float = 0.0  # 0: no time budget
    patience: int = 3
    val_fraction: float = 0.05
    seed: int = 0
    keep_typography: bool = False
    keep_line_breaks: bool = False  # False: reflow hard-wrapped books into one line per paragraph
    encoding: str = "utf-8"
    epoch_chars: int = 0  # chars of training text per epoch (validation, checkpoint); 0: one full pass
    schedule: tuple[tuple[int, float], ...] = ()  # (last epoch, learning rate) stages; () -> learning_rate
    holdout_books: tuple[str, ...] = ()  # file names kept out of training, reported as unseen books
    init_from: str = ""  # a bundle whose weights start the run (characters matched by name)
    blocklist: str = "shipped"  # drop paragraphs with blocked words: "shipped", a list file, or "none"
    min_char_count: int = 1  # rarer characters are folded to a plain form or dropped
    average_epochs: int = 1  # the bundle is the mean of the last N epochs' weights if that validates better

    def check(self) -> "TrainConfig":
        problems = []
        if self.seq_length < 2:
            problems.append("--seq-length must be at least 2")
        if self.batch_size < 1:
            problems.append("--batch-size must be at least 1")
        if self.embedding < 1 or not self.units or min(self.units) < 1:
            problems.append("--embedding and every --units value must be positive")
        if self.cell not in ("gru", "lstm"):
            problems.append("--cell must be gru or lstm")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout must be in [0, 1)")
        if self.learning_rate <= 0:
            problems.append("--learning-rate must be positive")
        if self.epochs < 1:
            problems.append("--epochs must be at least 1")
        if not 0 < self.val_fraction < 0.5:
            problems.append("--val-fraction must be between 0 and 0.5")
        if self.patience < 1:
            problems.append("--patience must be at least 1")
        if self.epoch_chars < 0:
            problems.append("--epoch-chars must be 0 (a full pass) or positive")
        ends = [end for end, _ in self.schedule]
        if any(rate <= 0 for _, rate in self.schedule) or ends != sorted(set(ends)) or (ends and ends[0] < 1):
            problems.append("schedule stages must be [last epoch, learning rate] with rising epochs and "
                            "positive rates")
        if self.min_char_count < 1:
            problems.append("--min-char-count must be at least 1")
        if self.average_epochs < 1:
            problems.append("--average-epochs must be at least 1 (1: the best epoch alone)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def architecture(self) -> dict:
        return {"embedding": self.embedding, "units": list(self.units), "cell": self.cell,
                "dropout": self.dropout}

    def learning_rate_at(self, epoch: int) -> float:
        """The rate for 0-based `epoch`: its schedule stage's, else learning_rate."""
        for end, rate in self.schedule:
            if epoch < end:
                return rate
        return self.schedule[-1][1] if self.schedule else self.learning_rate

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("units", "schedule", "holdout_books"):
            d[key] = [list(v) if isinstance(v, tuple) else v for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"corpus"})
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        d = {k: v for k, v in d.items() if k in known}
        if "units" in d:
            d["units"] = tuple(d["units"])
        if "holdout_books" in d:
            d["holdout_books"] = tuple(d["holdout_books"])
        if "schedule" in d:
            d["schedule"] = tuple((int(end), float(rate)) for end, rate in d["schedule"])
        return cls(**d)


def read_recipe(path) -> tuple[dict, list[str]]:
    """A recipe file's options and its corpus paths (relative to the project root, where quill runs)."""
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read recipe {path}: {e}") from None
    corpus = recipe.pop("corpus", [])
    if not isinstance(corpus, list) or not all(isinstance(c, str) for c in corpus):
        raise ValueError(f"{path}: corpus must be a list of paths")
    TrainConfig.from_dict(recipe).check()  # names the first bad option now, not after reading the corpus
    return recipe, corpus
