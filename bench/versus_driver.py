"""One side of `quill bench versus` (bench/versus.py): run with its checkout first on PYTHONPATH, it
imports that checkout's generator, so it uses only what every revision had (StoryGenerator,
GeneratorConfig, StoryRequest), and the memory's cast and the filter where the revision has them.
Orders come as JSON lines on stdin ({"stories": n, "seed": s, "length": L}); each answer is
{"chars_per_s": ...} on stdout. An empty order asks whether it is ready, and from which checkout."""
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

from model import client
from model.client import StoryGenerator
from model.generator import GeneratorConfig, StoryRequest

PROMPT = "Harry looked at the castle and "


async def main(model: Path) -> None:
    fields = {f.name for f in dataclasses.fields(GeneratorConfig)}
    options = {"search_width": 1} if "search_width" in fields else {}
    generator = StoryGenerator(GeneratorConfig(model=model, max_batch=64, queue_size=64, timeout=600, **options))
    await generator.start()
    cast = ()
    if "cast" in {f.name for f in dataclasses.fields(StoryRequest)}:
        from model.generator import usable_cast
        from model.memory import default_cast

        cast = usable_cast(default_cast(), generator.vocab)
    extra = {"cast": cast} if cast else {}
    try:
        for line in sys.stdin:
            order = json.loads(line)
            answer = {"checkout": str(Path(client.__file__).resolve().parents[1])} if not order else {}
            if order:
                started = time.perf_counter()
                told = await asyncio.gather(*(generator.generate(StoryRequest(PROMPT, order["length"],
                                                                              seed=order["seed"] + i, **extra))
                                              for i in range(order["stories"])))
                answer["chars_per_s"] = sum(len(s.text) - len(PROMPT) for s in told) / (time.perf_counter() - started)
            print(json.dumps(answer), flush=True)
    finally:
        await generator.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
