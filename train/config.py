"""Training hyper-parameters: one plain object, defaults equal to the seed recipe; the CLI overrides."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    RESUMABLE = ("epochs", "max_steps", "minutes", "learning_rate", "patience")  # may change on --resume

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
    encoding: str = "utf-8"

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
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def architecture(self) -> dict:
        return {"embedding": self.embedding, "units": list(self.units), "cell": self.cell,
                "dropout": self.dropout}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["units"] = list(self.units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "units" in d:
            d["units"] = tuple(d["units"])
        return cls(**d)
