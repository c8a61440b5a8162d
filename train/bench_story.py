"""`quill bench story`: what a reader sees, measured on stories told at a server's defaults.

Each bundle tells the same stories (the same starts and seeds) and is measured against the books:
paragraph breaks, real words (a lexicon of the corpus), word 4-grams a story repeats, sentence length.
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

from bot.limits import STORY_LENGTH, TEMPERATURE
from model.bundle import read_metadata
from model.client import StoryGenerator
from model.generator import GeneratorConfig, StoryRequest
from train.corpus import read_corpus

# Varied on purpose: names alone, names doing something, dialogue, places, a fairy-tale opening.
STARTS = ("Harry Potter", "Severus Snape", "Hermione opened the book and", "Hagrid knocked on the door",
          "Professor McGonagall", "The Sorting Hat", "Ron Weasley", "Draco Malfoy sneered",
          "Luna Lovegood", "Neville Longbottom", "The Forbidden Forest was dark", '"Yes," said Ron.',
          "Dumbledore smiled", "The Great Hall", "It was the first day of term", "Ginny Weasley",
          "The letter from Hogwarts", "Once upon a time", "Snape swept into the dungeon", "The castle was quiet")
SEEDS_PER_START = 3
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
SENTENCE_END = re.compile(r"[.!?]+[\"')]*(?=\s|$)")


def words(text: str) -> list[str]:
    return WORD.findall(text)


def paragraph_breaks_per_1000(model_text: str) -> float:
    return 1000 * model_text.count("\n") / max(len(model_text), 1)


def repeated_4gram_share(story_words: list[str]) -> tuple[int, int]:
    """(4-grams seen before in the same story, all 4-grams)."""
    grams = [tuple(w.lower() for w in story_words[i:i + 4]) for i in range(len(story_words) - 3)]
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats, len(grams)


def sentence_words(text: str) -> list[int]:
    """Words per sentence, for each whole sentence."""
    return [n for n in (len(words(s)) for s in SENTENCE_END.split(text)[:-1]) if n]


def measure(texts: list[str], lexicon: set[str]) -> dict:
    """`texts` are model text (one line per paragraph)."""
    all_words = [w for t in texts for w in words(t)]
    repeats = [repeated_4gram_share(words(t)) for t in texts]
    sentences = [n for t in texts for n in sentence_words(t)]
    return {"paragraph_breaks_per_1000_chars": round(paragraph_breaks_per_1000("".join(texts)), 2),
            "stories_with_a_paragraph_break": round(sum("\n" in t.strip() for t in texts) / len(texts), 3),
            "real_word_rate": round(sum(w.lower() in lexicon for w in all_words) / max(len(all_words), 1), 4),
            "repeated_4gram_share": round(sum(r for r, _ in repeats) / max(sum(n for _, n in repeats), 1), 4),
            "mean_sentence_words": round(sum(sentences) / max(len(sentences), 1), 1)}


def book_figures(texts: list[str], lexicon: set[str]) -> dict:
    sentences = [n for t in texts for n in sentence_words(t)]
    return {"paragraph_breaks_per_1000_chars": round(paragraph_breaks_per_1000("".join(texts)), 2),
            "mean_sentence_words": round(sum(sentences) / max(len(sentences), 1), 1),
            "lexicon_words": len(lexicon)}


async def tell(model_dir: Path, requests: list[StoryRequest]) -> list[str]:
    """The stories' new text as model text (what the model wrote, one line per paragraph)."""
    generator = StoryGenerator(GeneratorConfig(model=model_dir, max_batch=64, queue_size=len(requests),
                                               timeout=600))
    await generator.start()
    try:
        stories = await asyncio.gather(*(generator.generate(r) for r in requests))
    finally:
        await generator.close()
    from_reading = generator.vocab.normalisation.from_reading
    return [from_reading(s.written) for s in stories]


def bench_story(models: list[Path], corpus: list[str], starts: tuple[str, ...] = STARTS,
                seeds: int = SEEDS_PER_START, temperature: float = TEMPERATURE.default,
                length: int = STORY_LENGTH.default) -> dict:
    normalisation = read_metadata(models[0]).vocab.normalisation
    books = [f.text for f in read_corpus(corpus, normalisation)]
    lexicon = {w.lower() for text in books for w in words(text)}
    requests = [StoryRequest(start, length, temperature, seed) for start in starts for seed in range(seeds)]
    result = {"stories": len(requests), "starts": len(starts), "temperature": temperature, "length": length,
              "books": book_figures(books, lexicon), "models": []}
    for model_dir in models:  # side by side: the same stories from each
        texts = asyncio.run(tell(model_dir, requests))
        result["models"].append({"bundle": str(model_dir), "name": read_metadata(model_dir).name,
                                 **measure(texts, lexicon)})
    return result
