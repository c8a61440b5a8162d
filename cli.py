"""`quill`: the one command-line face of the project (train, story, run, bench)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path


def default_model() -> str:
    from bot.settings import Settings  # QUILL_MODEL, else the shipped model

    return str(Settings.from_env().model)


def _units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--units takes sizes separated by commas, like 512,256 (got {text!r})")
    return units


def add_train(sub) -> None:
    from train.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model bundle on a corpus of .txt files",
                       description="Options left out take the seed recipe's values (shown), or on --resume "
                                   "the interrupted run's.")
    p.add_argument("--recipe", metavar="FILE", help="a TOML recipe (train/recipes/) with the corpus and options; "
                                                    "options given here override it")
    p.add_argument("--corpus", nargs="+", metavar="PATH", help=".txt files or folders of them")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle folder (checkpoints go in DIR/checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
    p.add_argument("--name", help="model name shown in the bot (default: the folder name)")
    options = [("--epochs", int, d.epochs, None), ("--max-steps", int, d.max_steps, "stop after this many steps (0: no limit)"),
               ("--minutes", float, d.minutes, "time budget; the bundle is still written (0: none)"),
               ("--seq-length", int, d.seq_length, None), ("--batch-size", int, d.batch_size, None),
               ("--embedding", int, d.embedding, None),
               ("--units", _units, ",".join(map(str, d.units)), "recurrent layer sizes"),
               ("--dropout", float, d.dropout, None), ("--learning-rate", float, d.learning_rate, None),
               ("--clipnorm", float, d.clipnorm, "gradient clipping (0: none)"),
               ("--patience", int, d.patience, "early stopping patience in epochs"),
               ("--val-fraction", float, d.val_fraction, None), ("--seed", int, d.seed, None),
               ("--encoding", str, d.encoding, "text encoding of the corpus files"),
               ("--epoch-chars", int, d.epoch_chars, "training chars per epoch (0: one full pass)"),
               ("--init-from", str, "none", "a bundle folder whose weights start the run"),
               ("--blocklist", str, d.blocklist, "drop paragraphs with blocked words: shipped, a list file, or none"),
               ("--min-char-count", int, d.min_char_count, "rarer characters are folded or dropped"),
               ("--average-epochs", int, d.average_epochs,
                "the bundle is the mean of the last N epochs' weights when that validates better")]
    for flag, kind, default, text in options:
        p.add_argument(flag, type=kind, default=None, help=f"{text + '; ' if text else ''}default {default}")
    p.add_argument("--cell", choices=("gru", "lstm"), default=None, help=f"default {d.cell}")
    p.add_argument("--keep-typography", action="store_const", const=True, default=None,
                   help="do not fold curly quotes and dashes")
    p.add_argument("--keep-line-breaks", action="store_const", const=True, default=None,
                   help="keep the books' line breaks (verse, or text that already flows) instead of reflowing")
    p.add_argument("--holdout-books", nargs="+", default=None, metavar="FILE",
                   help="file names kept out of training and reported as unseen books")


def chosen_holdout(paths, count: int, seed: int) -> tuple[str, ...]:
    """`count` book names picked by `seed` from the corpus."""
    import random

    from train.corpus import find_text_files

    names = sorted(p.name for p in find_text_files(paths))
    if not 0 < count < len(names):
        raise ValueError(f"--holdout-books {count}: the corpus has {len(names)} files; hold out 1 to {len(names) - 1}")
    return tuple(sorted(random.Random(seed).sample(names, count)))


def cmd_train(args) -> int:
    from train.config import TrainConfig, read_recipe
    from train.loop import train

    recipe, corpus = read_recipe(args.recipe) if args.recipe else ({}, [])
    corpus = args.corpus or corpus
    if not corpus:
        raise ValueError("no corpus: pass --corpus PATH... or a --recipe that names one")
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    holdout = given.get("holdout_books")
    if holdout and len(holdout) == 1 and holdout[0].isdigit():  # --holdout-books N
        given["holdout_books"] = chosen_holdout(corpus, int(holdout[0]), given.get("seed", recipe.get("seed", 0)))
    options = {**recipe, **given}
    if args.resume:
        train(corpus, args.out, resume=True, overrides=options, name=args.name, recipe=args.recipe)
    else:
        train(corpus, args.out, TrainConfig.from_dict(options), name=args.name, recipe=args.recipe)
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="bits per character and per word of a bundle on any text",
                       description="The text is cleaned as for training and normalised the bundle's own way; "
                                   "bits per word compare across bundles with different line handling.")
    p.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    p.add_argument("--corpus", nargs="+", required=True, metavar="PATH", help=".txt files or folders of them")
    p.add_argument("--part", choices=("all", "val"), default="all",
                   help="all of each file, or only its validation block (the last --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="characters per fresh-state window (default: the bundle's training windows, as its "
                        "validation measures); figures in 2,000-character windows, a story's length, "
                        "are printed beside them")
    p.add_argument("--memory", action="store_true",
                   help="also score the tale's memory (memory.json) in 2,000-character windows, with and without")
    p.add_argument("--json", action="store_true", help="print JSON (default: one line per figure)")


def cmd_eval(args) -> int:
    from model.bundle import load_bundle
    from train.corpus import read_corpus, split
    from train.evaluate import evaluate_story_lengths

    if args.window is not None and args.window < 2:
        raise ValueError(f"--window must be at least 2 characters, not {args.window}")
    bundle = load_bundle(Path(args.model or default_model()))
    files = read_corpus(args.corpus, bundle.vocab.normalisation, args.encoding)
    texts = [split(f.text, args.val_fraction)[1] if args.part == "val" else f.text for f in files]
    window = args.window or bundle.card.get("hyperparameters", {}).get("seq_length", 100)
    result = {"model": bundle.name, "bundle": str(bundle.path), "files": len(files), "part": args.part,
              "window": window, **evaluate_story_lengths(bundle.model, bundle.vocab, texts, window)}
    if args.memory:
        from train import memory_fit
        from train.evaluate import STORY_WINDOW

        if bundle.memory is None:
            raise ValueError(f"{bundle.path} has no memory.json: fit one with `quill fit-memory`")
        result["memory"] = memory_fit.evaluate(bundle.model, bundle.vocab, texts, bundle.memory, STORY_WINDOW)
    print_result(result, args.json)
    return 0


def add_fit_memory(sub) -> None:
    p = sub.add_parser("fit-memory", help="fit the tale's memory of a bundle on validation text (memory.json)",
                       description="Reads the validation block (the last --val-fraction) of each file in "
                                   "2,000-character windows and fits the memory's weight per match length; "
                                   "the cast settings of an existing memory.json are kept.")
    p.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    p.add_argument("--corpus", nargs="+", required=True, metavar="PATH", help=".txt files or folders of them")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--all-text", action="store_true",
                   help="let the memory speak anywhere, not only inside capitalised names")
    p.add_argument("--json", action="store_true")


def cmd_fit_memory(args) -> int:
    from model.bundle import load_bundle, save_memory
    from train import memory_fit
    from train.corpus import read_corpus, split
    from train.evaluate import STORY_WINDOW

    bundle = load_bundle(Path(args.model or default_model()))
    files = read_corpus(args.corpus, bundle.vocab.normalisation)
    texts = [split(f.text, args.val_fraction)[1] for f in files]
    config = memory_fit.fit(bundle.model, bundle.vocab, texts, STORY_WINDOW, bundle.memory, not args.all_text)
    save_memory(bundle.path, config)
    print_result({"bundle": str(bundle.path), **config.to_dict()}, args.json)
    return 0


def add_fit_critic(sub) -> None:
    p = sub.add_parser("fit-critic", help="fit the sentence critic of a bundle (critic.npz, critic.json)",
                       description="Counts the words of the books the bundle trained on (its held-out books and "
                                   "each file's validation block left out) and fits the critic's weights to blind "
                                   "readers' choices between pairs of the model's sentences. --write-pairs writes "
                                   "a new set of pairs for readers instead.")
    p.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    p.add_argument("--corpus", nargs="+", metavar="PATH", help=".txt files or folders of them")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--pairs", type=Path, default=CRITIC_PAIRS, help=f"the pairs readers judged (default {CRITIC_PAIRS})")
    p.add_argument("--judgments", type=Path, nargs="+", default=None, metavar="FILE",
                   help='the readers\' choices, {"id": N, "better": "a" or "b"} a line '
                        "(default: judged-*.jsonl beside the pairs)")
    p.add_argument("--write-pairs", type=Path, metavar="FILE", help="write --count pairs for readers to FILE, and stop")
    p.add_argument("--count", type=int, default=200, help="pairs to write")
    p.add_argument("--json", action="store_true")


CRITIC_PAIRS = Path("train/critic/pairs.jsonl")


def cmd_fit_critic(args) -> int:
    import json

    from model.memory import default_cast
    from bench.story import STARTS
    from train.critic_fit import fit_critic, reading_pairs

    model = Path(args.model or default_model())
    if args.write_pairs:
        pairs = reading_pairs(model, STARTS, args.count, default_cast())
        args.write_pairs.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        print_result({"pairs": len(pairs), "file": str(args.write_pairs)}, args.json)
        return 0
    if not args.corpus:
        raise ValueError("--corpus is needed to count the books' words")
    judgments = args.judgments or sorted(args.pairs.parent.glob("judged-*.jsonl"))
    print_result(fit_critic(model, args.corpus, args.pairs, judgments, args.val_fraction, log=notice), args.json)
    return 0


def print_result(result: dict, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key}: {json.dumps(value)}")


def add_story(sub) -> None:
    from bot.limits import STORY_LENGTH, TEMPERATURE
    from model.generator import StoryRequest

    p = sub.add_parser("story", help="print a story from a model bundle")
    p.add_argument("start", help="the opening words")
    p.add_argument("--length", type=int, default=STORY_LENGTH.default,
                   help="new characters after the start (default: a server's, %(default)s)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE.default,
                   help=f"how adventurous each character is: lower is safer, higher wilder ({TEMPERATURE}; "
                        "default: a server's, %(default)s)")
    p.add_argument("--top-k", type=int, default=StoryRequest.top_k,
                   help="draw only from the k likeliest characters (default: %(default)s, every character)")
    p.add_argument("--top-p", type=float, default=StoryRequest.top_p,
                   help="draw only from the likeliest characters that make up this share of the chance "
                        "(above 0, at most 1; default: %(default)s, every character)")
    p.add_argument("--seed", type=int, default=None, help="same seed, same story (default: a random one, printed "
                                                          "on stderr)")
    p.add_argument("--cast", nargs="*", default=None, metavar="ENTRY",
                   help="names, places and things the tale's memory holds (default: a new server's wizarding "
                        "cast, model/cast.txt; --cast alone: none)")
    p.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")


def notice(text: str) -> None:
    """Something a person waiting should know (a first start compiles the engine)."""
    print(text, file=sys.stderr, flush=True)


def cmd_story(args) -> int:
    import asyncio

    from model.client import StoryGenerator
    from model.generator import GeneratorConfig, StoryRequest, usable_cast, word_filter
    from model.memory import default_cast

    async def tell() -> None:
        model = Path(args.model or default_model())
        generator = StoryGenerator(GeneratorConfig(model=model, max_length=max(args.length, 2000)), notice)
        # The default cast as far as this model can write it, as the bot sends it; one typed here is checked.
        cast = usable_cast(default_cast(), generator.vocab) if args.cast is None else tuple(args.cast)
        request = StoryRequest(args.start, args.length, args.temperature, args.seed, args.top_k, args.top_p,
                               cast=cast)
        request = generator.prepare(request)  # bad input fails before the model loads
        await generator.start()
        try:
            words = word_filter(request.blocked_words)  # masked like the bot's display: the last line of defence
            async for event in generator.stream(request):
                if event.story is not None:
                    story = event.story
                print(words.mask(event.text), end="", flush=True)
            print(flush=True)
            if request.folded:
                notice(f"(wrote {', '.join(request.folded)}: the model's alphabet has no such letters)")
            notice(f"(seed {story.seed}: --seed {story.seed} tells this story again)")
        finally:
            await generator.close()

    asyncio.run(tell())
    return 0


def add_run(sub) -> None:
    sub.add_parser("run", help="run the Discord bot (a console when DISCORD_TOKEN is not set)")


def cmd_run(args) -> int:
    import asyncio
    import logging

    from bot.app import QuillBot
    from bot.console import run_console
    from bot.settings import Settings

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bot = QuillBot(settings, on_notice=notice)
    if settings.discord_token is None:
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))  # keep the console clean
        logging.getLogger("discord").setLevel(logging.ERROR)  # a console has no gateway to report on
        asyncio.run(run_console(bot))
        return 0

    async def serve() -> None:
        async with bot:
            await bot.start(settings.discord_token)

    return on_discord("run", serve)


def add_sync(sub) -> None:
    sub.add_parser("sync", help="send the slash commands to Discord now",
                   description="The bot syncs its commands by itself when they change; use this when "
                               "Discord shows old ones (the owner's token, DISCORD_TOKEN, is needed).")


def cmd_sync(args) -> int:
    import logging

    from bot.app import QuillBot
    from bot.settings import Settings

    settings = Settings.from_env()
    if settings.discord_token is None:
        raise ValueError("DISCORD_TOKEN is not set: syncing sends the commands to Discord")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("discord").setLevel(logging.ERROR)
    bot = QuillBot(settings, force_sync=True)

    async def sync() -> None:
        async with bot:
            await bot.login(settings.discord_token)  # login runs setup_hook, which syncs

    return on_discord("sync", sync)


def on_discord(command: str, main) -> int:
    """Run a coroutine that talks to Discord; a refused token or no connection is one line, exit 1."""
    import asyncio

    import discord

    try:
        asyncio.run(main())
    except discord.LoginFailure:
        print(f"quill {command}: error: Discord refused DISCORD_TOKEN (wrong or revoked); "
              "copy the bot token again from the Developer Portal", file=sys.stderr)
        return 1
    except (OSError, discord.GatewayNotFound) as e:  # aiohttp's connection errors are OSErrors
        print(f"quill {command}: error: cannot reach Discord ({e})", file=sys.stderr)
        return 1
    return 0


SHARED_CORPUS = ("../shared/corpus/fantasy", "../shared/corpus/library")


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks against the seed recipe, printed as JSON")
    bench = p.add_subparsers(dest="bench", required=True)
    t = bench.add_parser("train", help="training throughput: configured model vs the seed's fit()")
    t.add_argument("--corpus", nargs="+", default=None, metavar="PATH",
                   help="text to train on (default: ../shared/corpus/bench/tinyshakespeare.txt if present, "
                        "else generated text)")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--units", type=_units, default=(512, 256))
    t.add_argument("--embedding", type=int, default=300)
    t.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    t.add_argument("--epochs", type=int, default=0,
                   help="also train each variant this many epochs on the corpus and report validation loss")
    t.add_argument("--json", action="store_true", help="print JSON (default: one line per figure)")
    g = bench.add_parser("generate", help="story generation: our generator vs the seed's per-char loop")
    g.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    g.add_argument("--length", type=int, default=1000, help="new characters per story (the targets are for 1,000)")
    g.add_argument("--json", action="store_true", help="print JSON (default: one line per figure)")
    s = bench.add_parser("story", help="what a reader sees: paragraphs, real words, repeats, sentence length")
    s.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    s.add_argument("--against", nargs="*", default=[], metavar="DIR", help="bundles measured beside it")
    s.add_argument("--corpus", nargs="+", default=list(SHARED_CORPUS), metavar="PATH",
                   help="the books: their own figures and the lexicon of real words (default: %(default)s)")
    s.add_argument("--starts", nargs="+", default=None, metavar="TEXT",
                   help="story starts, each told with 3 seeds (default: 20 varied Potter starts)")
    s.add_argument("--length", type=int, default=800, help="new characters a story asks for (default: the server's)")
    s.add_argument("--stories-out", type=Path, metavar="DIR", help="write each run's stories there, as JSON")
    s.add_argument("--json", action="store_true", help="print JSON (default: one line per figure)")
    st = bench.add_parser("store", help="gallery operations per second for many members, SQLite and PostgreSQL")
    st.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use (default: a throwaway local "
                                                      "server, started and stopped for the run)")
    st.add_argument("--members", type=int, default=100, help="members acting at once")
    st.add_argument("--ops", type=int, default=10, help="operations of each kind per member and round")
    st.add_argument("--rounds", type=int, default=3)
    st.add_argument("--json", action="store_true")
    w = bench.add_parser("web", help="a tale's page on the web gallery for many readers, SQLite and PostgreSQL")
    w.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use (default: a throwaway local "
                                                     "server, started and stopped for the run)")
    w.add_argument("--readers", type=int, default=100, help="readers at once")
    w.add_argument("--pages", type=int, default=50, help="pages each reader reads, per measurement")
    w.add_argument("--json", action="store_true")
    v = bench.add_parser("versus", help="this checkout's generator and an earlier revision's, taking turns")
    v.add_argument("revision", help="a git revision of this repository (it is checked out in a temporary worktree)")
    v.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    v.add_argument("--length", type=int, default=1000, help="new characters per story")
    v.add_argument("--rounds", type=int, default=9, help="one-request stories per side (the median is kept)")
    v.add_argument("--json", action="store_true", help="print JSON (default: one line per figure)")
    f = bench.add_parser("filter", help="the word filter: matches in a corpus, stories it stepped into, its cost")
    f.add_argument("--model", default=None, metavar="DIR", help="bundle folder (default: the shipped model)")
    f.add_argument("--corpus", nargs="*", default=[], metavar="PATH", help="books to scan for matches")
    f.add_argument("--stories", type=int, default=64, help="stories of 1,000 characters, told at once")
    f.add_argument("--temperature", type=float, default=1.0)
    f.add_argument("--starts", nargs="+", default=None, metavar="TEXT", help="story starts (default: Potter names)")
    f.add_argument("--json", action="store_true", help="print JSON (default: one line per figure)")


def cmd_bench(args) -> int:
    if args.bench == "train":
        from bench.train import bench_train
        result = bench_train(args)
    elif args.bench == "filter":
        from bench.generate import POTTER_STARTS, bench_filter
        result = bench_filter(Path(args.model or default_model()), args.corpus, args.stories, args.temperature,
                              tuple(args.starts or POTTER_STARTS))
    elif args.bench == "store":
        from bench.store import bench_store
        result = bench_store(args.postgres, args.members, args.ops, args.rounds)
    elif args.bench == "web":
        from bench.web import bench_web
        result = bench_web(args.postgres, args.readers, args.pages)
    elif args.bench == "versus":
        from bench.versus import bench_versus
        result = bench_versus(args.revision, Path(args.model or default_model()).resolve(), args.length, args.rounds)
    elif args.bench == "story":
        from bench.story import STARTS, bench_story
        result = bench_story([Path(args.model or default_model()), *map(Path, args.against)], args.corpus,
                             tuple(args.starts or STARTS), length=args.length, stories_out=args.stories_out)
    else:
        from bench.generate import bench_generate
        result = bench_generate(Path(args.model or default_model()), args.length)
    print_result(result, args.json)
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "fit-memory": cmd_fit_memory, "fit-critic": cmd_fit_critic,
            "story": cmd_story, "run": cmd_run, "sync": cmd_sync, "bench": cmd_bench}
# Each command's parser, and the package it needs beyond the runtime's: the runtime image ships
# neither train/ nor bench/ (it tells stories; it does not train or measure), so it lists neither.
PARSERS = ((add_train, "train"), (add_eval, "train"), (add_fit_memory, "train"), (add_fit_critic, "train"),
           (add_story, None), (add_run, None), (add_sync, None), (add_bench, "bench"))


def installed(package: str | None) -> bool:
    return package is None or importlib.util.find_spec(package) is not None


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users
    parser = argparse.ArgumentParser(prog="quill", description="Harry-Potter-style stories from a character-level GRU")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, package in PARSERS:
        if installed(package):
            add(sub)
    args = parser.parse_args(argv)
    from model.generator import GeneratorError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, GeneratorError) as e:  # bad input: bundle, corpus, settings, request
        print(f"quill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C anywhere: a clean stop, no traceback
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
