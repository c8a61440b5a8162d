import os
import random

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WORDS = ("Harry Hermione Ron Snape Dumbledore wand castle owl potion spell broom dragon "
         "looked said ran flew cast whispered opened found the a at with into over old dark "
         "secret magic great small hall tower forest door letter @everyone").split()


def make_text(n_sentences: int, seed: int = 0) -> str:
    """Small, learnable text: random sentences over a fixed word list."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        sentence = " ".join(words)
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".!?"))
    lines, line = [], ""
    for i, s in enumerate(sentences):
        line = f"{line} {s}".strip()
        if len(line) > 60:
            lines.append(line)
            line = ""
        if i % 5 == 4:  # hard-wrapped paragraphs, as the books are
            lines.append(line + "\n")
            line = ""
    return "\n".join(lines + [line]) + "\n"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "one.txt").write_text(make_text(600, seed=1), encoding="utf-8")
    (folder / "two.txt").write_text(make_text(300, seed=2), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_config():
    from train.config import TrainConfig

    return TrainConfig(seq_length=50, batch_size=32, embedding=16, units=(48, 32), epochs=2,
                       learning_rate=0.01, val_fraction=0.1)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_corpus, tiny_config, tmp_path_factory):
    """A real bundle trained for 2 epochs on the tiny corpus (a few seconds on CPU)."""
    from train.loop import train

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    train([tiny_corpus], out, tiny_config, name="tiny", log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def remembering_bundle(tiny_bundle, tiny_corpus, tmp_path_factory):
    """The tiny bundle with a memory fitted by `quill fit-memory` on its own corpus, as bundles ship."""
    import shutil

    import cli

    folder = tmp_path_factory.mktemp("remembering") / "tiny"
    shutil.copytree(tiny_bundle, folder)
    assert cli.main(["fit-memory", "--model", str(folder), "--corpus", str(tiny_corpus), "--val-fraction", "0.5",
                     "--json"]) == 0
    return folder


BLOCKED = "grumbleweed"  # a made-up word the safety tests block


@pytest.fixture(scope="session")
def weedy_bundle(tmp_path_factory, tiny_config):
    """A tiny model trained on text full of BLOCKED, so it keeps wanting to write it."""
    from dataclasses import replace

    from train.loop import train

    folder = tmp_path_factory.mktemp("weedy")
    rng = random.Random(5)
    sentences = [f"Harry saw the {BLOCKED}.", f"The {BLOCKED} grew.", f"Ron ran to the {BLOCKED}!",
                 f"A {BLOCKED} is green.", "Snape looked at the castle.", "The owl flew over the hall."]
    paragraphs = [" ".join(rng.choice(sentences) for _ in range(8)) for _ in range(400)]
    (folder / "weeds.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("bundles") / "weedy"
    train([folder], out, replace(tiny_config, epochs=4), name="weedy", log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the whole run (tools/local_postgres.py); each test that
    needs one takes a fresh database from it. Without PostgreSQL the tests fail, saying how to install it."""
    from tools.local_postgres import LocalPostgres, PostgresMissing

    try:
        server = LocalPostgres()
    except PostgresMissing as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_location(request, tmp_path):
    """Where a test's database lives, once in a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "quill.db")
    return request.getfixturevalue("postgres_server").new_database()


def three_paragraph_book(folder, paragraphs=3):
    text = "\n\n".join(f"Paragraph {i}. " + "The owl flew over the hall and the boys\nwatched it go. " * 20
                       for i in range(paragraphs)) + "\n"
    (folder / "book.txt").write_text(text, encoding="utf-8")
    return folder
