"""`quill bench story`: what a reader sees, measured on stories told at a server's defaults.

Each bundle tells the same stories (the same starts and seeds; every story its own seed, as on a
server: stories that share a seed share their random draws, and so their likeliest sentences), with
the tale's memory off and with the memory and the default cast on, and is measured against the
books: paragraph breaks, real words (a lexicon of the corpus and the cast), word 4-grams a story
repeats, sentence length; whether the start's people come back (name recall), the cast and
wizarding words, spans copied within a story, and how thick names lie (capitalised words that open
no sentence, the most repeated name).
"""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from bot.limits import STORY_LENGTH, TEMPERATURE
from model.bundle import read_metadata
from model.client import StoryGenerator
from model.critic import Critic, broken_entries, cast_words_of, tokens
from model.generator import GeneratorConfig, StoryRequest, usable_cast
from model.memory import default_cast, names_in
from train.corpus import read_corpus

# Varied on purpose: names alone, names doing something, dialogue, places, a fairy-tale opening.
STARTS = ("Harry Potter", "Severus Snape", "Hermione opened the book and", "Hagrid knocked on the door",
          "Professor McGonagall", "The Sorting Hat", "Ron Weasley", "Draco Malfoy sneered",
          "Luna Lovegood", "Neville Longbottom", "The Forbidden Forest was dark", '"Yes," said Ron.',
          "Dumbledore smiled", "The Great Hall", "It was the first day of term", "Ginny Weasley",
          "The letter from Hogwarts", "Once upon a time", "Snape swept into the dungeon", "The castle was quiet")
# Whom each start names (name recall; a start not listed here, whom model.memory.names_in finds).
NAMED = {"The Sorting Hat": (), "The Forbidden Forest was dark": (), "The Great Hall": (),
         "It was the first day of term": (), "The letter from Hogwarts": (), "Once upon a time": (),
         "The castle was quiet": (), "Harry Potter": ("Harry", "Potter"), "Severus Snape": ("Severus", "Snape"),
         "Hermione opened the book and": ("Hermione",), "Hagrid knocked on the door": ("Hagrid",),
         "Professor McGonagall": ("McGonagall",), "Ron Weasley": ("Ron", "Weasley"),
         "Draco Malfoy sneered": ("Draco", "Malfoy"), "Luna Lovegood": ("Luna", "Lovegood"),
         "Neville Longbottom": ("Neville", "Longbottom"), '"Yes," said Ron.': ("Ron",),
         "Dumbledore smiled": ("Dumbledore",), "Ginny Weasley": ("Ginny", "Weasley"),
         "Snape swept into the dungeon": ("Snape",)}
WIZARDING = frozenset("""wand wands spell spells witch witches wizard wizards wizarding owl owls professor professors
potion potions broom broomstick broomsticks dragon dragons cauldron cauldrons magic magical charm charms cloak
hogwarts quidditch""".split())
TITLES = frozenset({"Professor", "Madam", "Mr", "Mrs", "Nearly", "Headless"})
SEEDS_PER_START = 3
SEARCH_WIDTH, SEARCH_WAVE = 8, 8  # candidates a sentence, and stories told at once with search on
COPIED_SPAN = 30  # characters: a story that repeats a span this long copies itself
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
# A reader's sentence end: an end mark (and closing quotes) before a break and a word that is not
# lower case ('What?' asked Snape. is one sentence), in the books and the stories alike.
SENTENCE_END = re.compile(r"[.!?]+[\"')]*(?=\s*$|\s+[^a-z\s])")
OPENING = re.compile(r"(?:^|[.!?][\"')]*\s|\n)[\"'(]*$")  # the end of text before a word opening a sentence
LOOK_BACK = 12  # characters before a word that decide whether it opens a sentence


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


def real(word: str, lexicon: set[str]) -> bool:
    """A word of the lexicon, or its possessive ("McGonagall's")."""
    word = word.lower()
    return word in lexicon or word.endswith("'s") and word[:-2] in lexicon


def capitalised_mid_sentence(text: str) -> tuple[list[str], int]:
    """(the capitalised words that open no sentence, all words); "I" is no name."""
    found, total = [], 0
    for m in WORD.finditer(text):
        total += 1
        word = m.group()
        before = text[max(0, m.start() - LOOK_BACK):m.start()]
        opens = OPENING.search(before) if m.start() <= LOOK_BACK else OPENING.search(before) and OPENING.search(
            before).start() > 0
        if word[0].isupper() and word != "I" and not word.startswith("I'") and not opens:
            found.append(word)
    return found, total


def top_name_per_100_words(text: str, markers: set[str]) -> float:
    """How often the story's most repeated name comes, per 100 words. Its names are the words it
    capitalises mid-sentence and the cast's; every capitalised use of them counts."""
    names = set(capitalised_mid_sentence(text)[0]) | markers
    counts: dict[str, int] = {}
    all_words = words(text)
    for word in all_words:
        if word in names:
            counts[word] = counts.get(word, 0) + 1
    return 100 * max(counts.values(), default=0) / max(len(all_words), 1)


def cast_markers(cast: tuple[str, ...]) -> tuple[set[str], list[str]]:
    """What shows a cast entry in a story: its capitalised words other than titles ("Snape",
    "Hogwarts"), or for "the Great Hall" the phrase "Great Hall"."""
    single, phrases = set(), []
    for entry in cast:
        if entry[0].islower():
            phrases.append(entry.split(" ", 1)[1] if " " in entry else entry)
        else:
            single |= {w for w in entry.split() if w[0].isupper() and w not in TITLES}
    return single, phrases


def cast_mentions(text: str, cast: tuple[str, ...]) -> int:
    single, phrases = cast_markers(cast)
    return (sum(w in single or w.lower() in WIZARDING for w in words(text))
            + sum(len(re.findall(rf"\b{re.escape(p)}\b", text)) for p in phrases))


def copies_itself(story: str, span: int = COPIED_SPAN) -> bool:
    """Whether some span of `span` characters comes twice."""
    return any(story.find(story[i:i + span]) < i for i in range(len(story) - span + 1))


def percentile_95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2) if ordered else 0.0


def from_elsewhere(text: str, start: str, cast: tuple[str, ...], names: frozenset[str]) -> int:
    """Names from other books: capitalised words mid-sentence that are in neither the cast, the
    start nor the tale before them, and that the books use as names."""
    known = {w for entry in cast for w in words(entry)} | set(words(start))
    count, seen = 0, set(known)
    for word in capitalised_mid_sentence(text)[0]:
        if word not in seen and word in names:
            count += 1
        seen.add(word)
    return count


def ends_a_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?][\"')]*\s*$", text))


def measure(texts: list[str], lexicon: set[str], starts: list[str] | None = None, cast: tuple[str, ...] = (),
            named: list[tuple[str, ...]] | None = None, critic: Critic | None = None) -> dict:
    """`texts` are model text (one line per paragraph): the new writing; `starts`, each story's start
    (for copying), `named`, whom each start names (for recall); `critic`, the bundle's (its names and
    word model) where it has one."""
    starts = starts or [""] * len(texts)
    named = named or [()] * len(texts)
    all_words = [w for t in texts for w in words(t)]
    repeats = [repeated_4gram_share(words(t)) for t in texts]
    sentences = [n for t in texts for n in sentence_words(t)]
    capitals = [capitalised_mid_sentence(t) for t in texts]
    markers = cast_markers(default_cast())[0]
    mentions = [cast_mentions(t, cast or default_cast()) for t in texts]
    recalled = [any(w in set(words(t)) for w in names) for t, names in zip(texts, named) if names]
    return {"paragraph_breaks_per_1000_chars": round(paragraph_breaks_per_1000("".join(texts)), 2),
            "stories_with_a_paragraph_break": round(sum("\n" in t.strip() for t in texts) / len(texts), 3),
            "real_word_rate": round(sum(real(w, lexicon) for w in all_words) / max(len(all_words), 1), 4),
            "repeated_4gram_share": round(sum(r for r, _ in repeats) / max(sum(n for _, n in repeats), 1), 4),
            "mean_sentence_words": round(sum(sentences) / max(len(sentences), 1), 1),
            "name_recall": round(sum(recalled) / len(recalled), 3) if recalled else None,
            "stories_naming_the_start": f"{sum(recalled)} of {len(recalled)}",
            "cast_presence": round(sum(n > 0 for n in mentions) / len(texts), 3),
            "cast_per_1000_words": round(1000 * sum(mentions) / max(len(all_words), 1), 1),
            "copying_30_chars": round(sum(copies_itself(s + t) for s, t in zip(starts, texts)) / len(texts), 3),
            "capitalised_mid_sentence_share": round(sum(len(c) for c, _ in capitals)
                                                    / max(sum(n for _, n in capitals), 1), 4),
            "top_name_per_100_words_p95": percentile_95([top_name_per_100_words(t, markers) for t in texts]),
            "stories_ending_a_sentence": round(sum(map(ends_a_sentence, texts)) / len(texts), 3),
            **(critic_figures(texts, starts, cast or default_cast(), mentions, critic) if critic else {})}


def critic_figures(texts: list[str], starts: list[str], cast: tuple[str, ...], mentions: list[int],
                   critic: Critic) -> dict:
    """What the critic looks for, read off the stories: broken cast entries (a share of the cast's
    mentions), names from other books, and the word model's log-probability per token of the story."""
    names = critic.words.names
    broken = sum(len(broken_entries(t, cast, critic.words)) for t in texts)
    per_token = []
    for start, text in zip(starts, texts):
        ids = critic.words.ids(tokens(text), cast_words_of(cast))
        context = critic.words.ids(tokens(start), cast_words_of(cast))
        per_token.append(float(critic.words.log_probs(ids, context).mean()) if len(ids) else 0.0)
    return {"broken_cast_entries_share": round(broken / max(sum(mentions), 1), 4),
            "names_from_elsewhere_per_story": round(sum(from_elsewhere(t, s, cast, names)
                                                        for t, s in zip(texts, starts)) / len(texts), 2),
            "word_model_log_prob_per_token": round(sum(per_token) / len(per_token), 3)}


def book_figures(texts: list[str], lexicon: set[str], chunk: int) -> dict:
    """The books' own figures; the per-story ones on passages of a story's length."""
    sentences = [n for t in texts for n in sentence_words(t)]
    capitals = [capitalised_mid_sentence(t) for t in texts]
    passages = [t[i:i + chunk] for t in texts for i in range(0, len(t) - chunk, 20 * chunk)]
    return {"paragraph_breaks_per_1000_chars": round(paragraph_breaks_per_1000("".join(texts)), 2),
            "mean_sentence_words": round(sum(sentences) / max(len(sentences), 1), 1),
            "capitalised_mid_sentence_share": round(sum(len(c) for c, _ in capitals)
                                                    / max(sum(n for _, n in capitals), 1), 4),
            "top_name_per_100_words_p95": percentile_95([top_name_per_100_words(p, set()) for p in passages]),
            "lexicon_words": len(lexicon)}


async def tell(model_dir: Path, requests: list[StoryRequest], memory: bool = True, search_width: int = 1) -> list:
    """The stories (model.generator.Story). With search, told SEARCH_WAVE at a time, as on a server
    where rows are free, so that each gets `search_width` candidates a sentence."""
    generator = StoryGenerator(GeneratorConfig(model=model_dir, max_batch=64, queue_size=len(requests),
                                               timeout=600, memory=memory, search_width=search_width))
    await generator.start()
    wave = len(requests) if search_width < 2 else SEARCH_WAVE
    try:
        stories = []
        for i in range(0, len(requests), wave):
            stories += await asyncio.gather(*(generator.generate(r) for r in requests[i:i + wave]))
    finally:
        await generator.close()
    return stories


def bench_story(models: list[Path], corpus: list[str], starts: tuple[str, ...] = STARTS,
                seeds: int = SEEDS_PER_START, temperature: float = TEMPERATURE.default,
                length: int = STORY_LENGTH.default, stories_out: Path | None = None) -> dict:
    """Every bundle with its memory off, then (where it has one) with the memory and the default cast."""
    vocab = read_metadata(models[0]).vocab
    normalisation = vocab.normalisation
    books = [f.text for f in read_corpus(corpus, normalisation)]
    cast = usable_cast(default_cast(), vocab)  # the entries this model can write, as the bot sends
    lexicon = {w.lower() for text in books + list(cast) for w in words(text)}  # cast names are real words
    starts_of = [start for start in starts for _ in range(seeds)]
    named = [NAMED[start] if start in NAMED else tuple(names_in(start, ())) for start in starts_of]
    result = {"stories": len(starts_of), "starts": len(starts), "temperature": temperature, "length": length,
              "stories_whose_start_names_someone": sum(bool(n) for n in named),
              "books": book_figures(books, lexicon, length), "models": []}
    for model_dir in models:  # side by side: the same stories from each
        bundle = read_metadata(model_dir)
        critic = Critic.load(model_dir)
        runs = [(False, 1)] + ([(True, 1)] if bundle.memory else []) + \
               ([(bool(bundle.memory), SEARCH_WIDTH)] if critic else [])
        for memory, width in runs:
            requests = [StoryRequest(start, length, temperature, seed, cast=cast if memory else ())
                        for seed, start in enumerate(starts_of)]
            stories = asyncio.run(tell(model_dir, requests, memory, width))
            texts = [normalisation.from_reading(s.written) for s in stories]
            result["models"].append({"bundle": str(model_dir), "name": bundle.name,
                                     "memory_and_cast": memory, "search_width": width,
                                     "widths_used": sorted({s.width for s in stories}),
                                     "seconds_per_story_median": round(sorted(s.seconds for s in stories)[len(stories) // 2], 3),
                                     **measure(texts, lexicon, [normalisation.apply(s) for s in starts_of],
                                               cast, named, critic)})
            if stories_out:  # for blind readers (../shared/tools/blind_pairs.py)
                stories_out.mkdir(parents=True, exist_ok=True)
                name = f"{model_dir.name}-{'memory' if memory else 'plain'}-k{width}.json"
                (stories_out / name).write_text(json.dumps([{"start": s.request.start, "seed": s.seed, "text": s.text}
                                                            for s in stories], indent=1), encoding="utf-8")
    return result
