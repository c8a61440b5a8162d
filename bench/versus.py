"""`quill bench versus REVISION`: this checkout's generator and an earlier revision's, side by side.

Each side is a driver process (bench/versus_driver.py) that imports its own checkout's generator
(the earlier one from a git worktree) and tells stories when asked; the two take turns, so both
see the same machine, busy or not. Both get the same model, starts, seeds and lengths; this side
runs with everything a server runs (the memory, the default cast and the filter), the sentence
search aside, which no earlier revision had.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "versus_driver.py"


class _Side:
    def __init__(self, checkout: Path, model: Path):
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.process = subprocess.Popen([sys.executable, str(DRIVER), str(model)], cwd=checkout, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.ask({})  # the engine compiled or loaded
        if Path(ready["checkout"]) != checkout.resolve():
            raise RuntimeError(f"the driver for {checkout} ran {ready['checkout']}'s code")

    def ask(self, order: dict) -> dict:
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the driver in {self.process.args} stopped")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def bench_versus(revision: str, model: Path, length: int = 1000, rounds: int = 9, wide_rounds: int = 3) -> dict:
    """chars/s of one request at a time (the median of `rounds`) and of 64 at once (of
    `wide_rounds`), this checkout against `revision`, taking turns."""
    with tempfile.TemporaryDirectory() as folder:
        earlier = Path(folder) / "earlier"
        subprocess.run(["git", "worktree", "add", "--detach", str(earlier), revision], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            sides = {"this": _Side(ROOT, model), "earlier": _Side(earlier, model)}
            try:
                rates = {(name, n): [] for name in sides for n in (1, 64)}
                for n, count in ((1, rounds), (64, wide_rounds)):
                    for round_ in range(count + 1):
                        for name, side in sides.items():
                            rate = side.ask({"stories": n, "seed": 1000 * round_, "length": length})["chars_per_s"]
                            if round_:  # the first of each is a warm-up
                                rates[name, n].append(rate)
            finally:
                for side in sides.values():
                    side.close()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(earlier)], cwd=ROOT, capture_output=True)
    medians = {key: statistics.median(r) for key, r in rates.items()}
    result = {"revision": revision, "model": str(model), "story_length": length}
    for n, label in ((1, "one_request"), (64, "aggregate_64")):
        result.update({f"{label}_this_chars_per_s": round(medians["this", n]),
                       f"{label}_earlier_chars_per_s": round(medians["earlier", n]),
                       f"{label}_this_vs_earlier": round(medians["this", n] / medians["earlier", n], 3)})
    return result
