"""Issue 11: the word filter, starts, stories that never carry a blocked word, training, reports."""
import pytest

from model.safety import WordFilter, shipped_filter
from tests.conftest import BLOCKED

EVASIONS = ["nigger", "NIGGER", "Nigger!", "niiiggerrr", "n1gg3r", "n!gger", "n.i.g.g.e.r", "n i g g e r",
            "n-i-g-g-e-r", "niggers", "nigga", "coons", "Negroes", "niggerish", "xnigger", "niggerx", "xn1ggerr",
            # round 3: accents, joined words, mixed, comma and apostrophe separators, other scripts, invisibles
            "rétard", "Rétard", "RÉTARD", "négro", "re-tard", "ré-tard", "re\u2011tard", "r,e,t,a,r,d", "r.e-t.a-r.d",
            "r'e't'a'r'd", "r\u2019e\u2019t\u2019a\u2019r\u2019d", "r, e, t, a, r, d", "r e t a r d", "n'i'g'g'e'r",
            "nìgg\u0435r", "r\u200betard", "ｒｅｔａｒｄ", "kïke", "spïcs", "co-ons", "nig-ger",
            "ret,ard", "re,tard", "reta-r,d", "rét.a-r,d"]
INNOCENT = ["Scunthorpe", "assassin", "cocktail", "Dick Whittington", "spicy", "spice", "injunction",
            "squawk", "Pakistan", "the Niger river", "Yiddish", "a chink of light", "the fags at school",
            "the fairy", "a spook", "sniggered", "snigger", "bigger", "digger", "class", "Niger", "Montenegro",
            "raccoon", "twopence", "the Woggle-Bug", "unsuspicious", "the Growleywogs",
            "naïve", "café", "façade", "re-enter", "co-operate", "Montenegro's", "don't", "I'm", "Harry's",
            "a raccoon-skin cap", "the Niger-delta", "ne'er-do-well", "a s-s-snake", "Dr. Kike-Jones"[:3],
            "yes,no", "1,000 owls", "Harry,Ron and Hermione"]


@pytest.mark.parametrize("text", EVASIONS)
def test_the_usual_evasions_are_caught(text):
    assert shipped_filter().find(f"and then {text} he said"), text


@pytest.mark.parametrize("text", INNOCENT)
def test_classic_false_positives_pass(text):
    assert not shipped_filter().find(text), text


def oracle(text: str) -> bool:
    """Not the filter: fold accents and look-alikes by another road, keep the letters, look for a listed word."""
    import unicodedata

    from model.safety import shipped_words

    def squeezed(s):  # repeats run together: "niiigger" -> "niger"
        return "".join(c for i, c in enumerate(s) if i == 0 or s[i - 1] != c)

    text = unicodedata.normalize("NFKC", text).lower().replace("\u0435", "e").translate(str.maketrans("013!", "oiei"))
    letters = squeezed("".join(c for c in unicodedata.normalize("NFKD", text) if "a" <= c <= "z"))
    return any(squeezed(word) in letters for word in shipped_words())


@pytest.mark.parametrize("text", EVASIONS)
def test_each_evasion_holds_a_listed_word_by_an_oracle_and_is_masked(text):
    assert oracle(text), text  # the oracle agrees it is one
    masked = shipped_filter().mask(f"and then {text} he said")
    assert not oracle(masked.replace("and then", "").replace("he said", "")), masked
    assert masked.startswith("and then ") and masked.endswith(" he said")


@pytest.mark.parametrize("text", EVASIONS)
def test_evasions_are_refused_in_starts_lines_and_cast_entries(text, weedy, weedy_bundle):
    from model.generator import GeneratorConfig, InvalidRequest, StoryRequest, checked_cast_entry

    vocab, _ = weedy
    with pytest.raises(InvalidRequest, match="not allowed here"):
        StoryRequest(f"Harry and {text}", 200).validated(vocab, GeneratorConfig(model=weedy_bundle))
    with pytest.raises(InvalidRequest, match="not allowed here"):
        checked_cast_entry(text.title()[:40], vocab)


def test_a_word_read_before_its_join_is_still_read_after_it():
    """A check after every character: "a s s" is blocked before "e t" makes it "asset"."""
    from model.generator import StoryRequest, _Row

    row = _Row(1, StoryRequest("Harry", 100, seed=1, blocked_words=("ass",)), 0.1)
    row.text += " said a s s e t and"  # one run of the engine
    assert row.blocked_at() == len("Harry said ")


@pytest.mark.parametrize("seed", range(40))
def test_scanning_from_the_token_start_finds_what_a_whole_scan_finds(seed):
    import random

    from model.safety import token_start

    rng = random.Random(seed)
    words = WordFilter.of(["tard", "ass", "nig"])
    text = "".join(rng.choice(["ta", "rd", "a", "s", " ", ", ", "-", "'", "n", "i g", "é", "x", ". "])
                   for _ in range(60))
    for end in range(1, len(text) + 1):
        floor = rng.randrange(0, end)
        while floor and not text[floor - 1].isspace():  # a floor is where a checked text began
            floor -= 1
        start = token_start(text, end, floor)
        assert floor <= start <= end
        whole = [(a, b) for a, b in words.spans(text[floor:end]) if floor + b > start]
        part = [(a + start - floor, b + start - floor) for a, b in words.spans(text[start:end])]
        assert part == whole, (text[floor:end], start - floor)


def test_server_words_are_whole_words_too():
    words = WordFilter.of(["dick", "ass"])
    assert words.find("You ass! Dick") == ["ass", "Dick"]
    assert not words.find("an assassin in Scunthorpe, a dickey-bow")
    assert words.mask("an ass.") == "an \u25a0\u25a0\u25a0."


def test_made_up_words_around_a_blocked_word_are_blocked_and_real_words_pass():
    words = WordFilter.of(["dracoflux"])
    for made_up in ("dracofluxaw", "dracofluxux", "xdracoflux", "dracofluxes", "dracofluxed", "dracofluuux"):
        assert words.find(f"the {made_up} ran"), made_up
    god = WordFilter.of(["god"])
    assert god.find("oh god, the gods and a g0d, a godz") == ["god", "gods", "g0d", "godz"]
    assert not god.find("good goods, a goddess, godly, Godfrey")  # repeated letters only in non-words


def test_a_spelled_out_word_across_runs_is_stopped_by_the_sampler():
    from model.generator import StoryRequest, _Row

    row = _Row(1, StoryRequest("Harry", 100, seed=1), 0.1)
    for piece in (" said n i g", " g e r and"):  # two runs of the engine
        row.text += piece
        found = row.blocked_at()
    assert found == len("Harry said ")


def test_list_entries_are_checked():
    from model.safety import clean_word

    assert clean_word("  Grumbleweed ") == "grumbleweed"
    for bad, message in (("", "empty"), ("two words", "one word"), ("x" * 41, "41 characters")):
        with pytest.raises(ValueError, match=message):
            clean_word(bad)


# -- stories -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weedy(weedy_bundle):
    from model.bundle import load_network
    from model.engine import FusedEngine

    bundle, network = load_network(weedy_bundle)
    return bundle.vocab, FusedEngine(network)


def write(engine, vocab, requests, steps_per_call=16):
    from model.generator import Scheduler
    from tests.helpers import tell_all

    stories, chunks = tell_all(Scheduler(engine, vocab, steps_per_call=steps_per_call), requests)
    return [(text, filtered) for text, filtered, _ in stories], chunks


def test_the_model_wants_the_word_and_never_writes_it(weedy):
    from model.generator import StoryRequest

    vocab, engine = weedy
    unfiltered, _ = write(engine, vocab, [StoryRequest("Harry saw the", 200, 1.5, seed) for seed in range(50)])
    assert sum(BLOCKED in text for text, _ in unfiltered) >= 10  # it does want to
    words = WordFilter.of([BLOCKED])
    requests = [StoryRequest("Harry saw the", 200, 1.5, seed, blocked_words=(BLOCKED,)) for seed in range(300)]
    stories, streamed = write(engine, vocab, requests)
    assert not any(words.find(text) for text, _ in stories)
    assert not any(words.find(text) for text in streamed)  # nor in a chunk streamed on the way
    assert sum(filtered for _, filtered in stories) >= 30
    assert all(len(text) > 150 for text, _ in stories)  # the stories go on, not cut short


@pytest.mark.slow
def test_no_story_holds_the_word_inside_a_non_word(weedy):
    """An oracle that is not the filter: a plain substring and dictionary test on 500 stories."""
    import re

    from model.generator import StoryRequest
    from model.safety import real_words

    vocab, engine = weedy
    requests = [StoryRequest("Harry saw the", 200, 1.5, seed, blocked_words=(BLOCKED,)) for seed in range(500)]
    stories, _ = write(engine, vocab, requests)
    leaks = [token for text, _ in stories for token in re.findall(r"[a-z0-9@$!|]+", text.lower())
             if BLOCKED in token and token not in real_words()]
    assert leaks == []
    assert sum(filtered for _, filtered in stories) >= 50  # the model kept trying


def test_filtered_stories_stay_deterministic(weedy):
    from model.generator import StoryRequest

    vocab, engine = weedy
    requests = [StoryRequest("Harry saw the", 300, 1.5, seed, blocked_words=(BLOCKED,)) for seed in range(12)]
    runs = [write(engine, vocab, requests, steps)[0] for steps in (1, 7, 16)]
    assert sum(f for _, f in runs[0]) > 0
    assert runs[0] == runs[1] == runs[2]
    alone = [write(engine, vocab, [r])[0][0] for r in requests[:4]]
    assert alone == runs[2][:4]  # and whatever company it had


def test_a_start_with_a_blocked_word_is_refused(weedy, weedy_bundle):
    from model.generator import GeneratorConfig, InvalidRequest, StoryRequest

    vocab, _ = weedy
    config = GeneratorConfig(model=weedy_bundle)
    with pytest.raises(InvalidRequest, match="not allowed here"):
        StoryRequest(f"Harry saw the {BLOCKED}", 200, blocked_words=(BLOCKED,)).validated(vocab, config)
    with pytest.raises(InvalidRequest, match="blocked_words"):
        StoryRequest("Harry", 200, blocked_words=("two words",)).validated(vocab, config)
    assert StoryRequest(f"Harry saw the {BLOCKED}", 200).validated(vocab, config)  # another server's word is fine


# -- the bot -----------------------------------------------------------------------------------
import pytest_asyncio  # noqa: E402

from tests.helpers import all_sends, button, ephemeral_text, final_embed, make_interaction, tale_id  # noqa: E402

guilds = iter(range(5000, 6000))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(weedy_bundle, tmp_path_factory):
    from bot.app import QuillBot
    from bot.settings import Settings

    bot = QuillBot(Settings(database=tmp_path_factory.mktemp("db") / "quill.db", model=weedy_bundle,
                            queue_size=64, max_batch=16, story_timeout=60))
    async with bot:
        await bot.prepare()
        bot.writer.edit_interval = 0.0  # every chunk becomes an edit
        yield bot


async def run(bot, name, interaction=None, **kwargs):
    from bot.console import invoke_command

    interaction = interaction or make_interaction(bot, guild_id=next(guilds))
    group, _, sub = name.partition(" ")
    command = bot.tree.get_command(group)
    interaction.command = command.get_command(sub) if sub else command
    await invoke_command(bot, interaction.command, interaction, **kwargs)
    return interaction


async def press(view, label, interaction):
    from bot.console import press_button

    await press_button(view, button(view, label), interaction)


def moderator(bot, guild_id, user_id=1):
    return make_interaction(bot, guild_id=guild_id, user_id=user_id, manage_guild=True, manage_messages=True)


async def test_filter_commands_need_manage_server_and_answer_privately(bot):
    guild = next(guilds)
    member = await run(bot, "filter add", make_interaction(bot, guild_id=guild), word="dragon")
    assert "Manage Server" in ephemeral_text(member)
    i = await run(bot, "filter add", moderator(bot, guild), word="  Dragon ")
    assert ephemeral_text(i) == "Blocked on this server: ||dragon||."
    i = await run(bot, "filter add", moderator(bot, guild), word="two words")
    assert "one word" in ephemeral_text(i)
    i = await run(bot, "filter list", moderator(bot, guild))
    assert "||dragon||" in ephemeral_text(i)
    i = await run(bot, "filter remove", moderator(bot, guild), word="drag0n!")
    assert "one word of the letters a-z" in ephemeral_text(i)  # read as /filter add reads it
    i = await run(bot, "filter remove", moderator(bot, guild), word=" DRAGON  ")
    assert ephemeral_text(i) == "Allowed again: ||dragon||."
    assert await bot.word_lists.words(guild) == ()
    for call in all_sends(i):
        assert call.kwargs.get("ephemeral") is True


async def test_a_blocked_start_is_refused_and_nothing_is_written(bot):
    guild = next(guilds)
    await run(bot, "filter add", moderator(bot, guild), word=BLOCKED)
    i = await run(bot, "story", make_interaction(bot, guild_id=guild), start=f"Harry saw the {BLOCKED.upper()}")
    assert "not allowed here" in ephemeral_text(i)
    i.response.defer.assert_not_called()
    assert (await bot.gallery.page(guild, 0, "new"))[0] == []
    i = await run(bot, "story", make_interaction(bot, guild_id=guild), start="the n1gger")  # the shipped list
    assert "not allowed here" in ephemeral_text(i)


async def test_a_display_name_with_a_blocked_word_is_masked_where_tales_show_it(bot):
    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0)
    await run(bot, "filter add", moderator(bot, guild), word=BLOCKED)
    for name in (f"*{BLOCKED[:4]}-{BLOCKED[4:]}*", "r.e-t.a-r.d", "Rétard"):
        i = await run(bot, "story", make_interaction(bot, guild_id=guild, name=name), start="Harry", length=100)
        view = i.edit_original_response.call_args.kwargs["view"]
        tale = await bot.gallery.get(guild, tale_id(view))
        assert "\u25a0" in tale.author_name and not shipped_filter().find(tale.author_name), tale.author_name
        assert not WordFilter.of([BLOCKED]).find(tale.author_name)
        await press(view, "Save", make_interaction(bot, guild_id=guild))
    gallery = await run(bot, "gallery", make_interaction(bot, guild_id=guild), sort="new")
    writers = [f.value.rsplit("\n— ", 1)[1] for f in gallery.response.send_message.call_args.kwargs["embed"].fields]
    assert "\\*" in writers[-1] and "\u25a0" in writers[-1]  # markdown shown as written, the word hidden


@pytest.mark.slow
async def test_no_blocked_word_on_any_path_and_servers_keep_their_own_words(bot):
    guild, other = next(guilds), next(guilds)
    await run(bot, "filter add", moderator(bot, guild), word=BLOCKED)
    for g in (guild, other):
        await bot.guild_settings.update(g, temperature=1.5, cooldown_seconds=0)
    words = WordFilter.of([BLOCKED])
    shown = []
    for seed in range(40):
        i = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=100 + seed),
                      start="Harry saw the", length=200, seed=seed)
        view = i.edit_original_response.call_args.kwargs["view"]
        await press(view, "Save", make_interaction(bot, guild_id=guild, user_id=100 + seed))
        again = make_interaction(bot, guild_id=guild, user_id=100 + seed)
        await press(view, "Again", again)
        for interaction in (i, again):
            shown += [c.kwargs.get("content") or "" for c in all_sends(interaction)]
            shown.append(final_embed(interaction).description)
    gallery = await run(bot, "gallery", make_interaction(bot, guild_id=guild), sort="new")
    shown += [f.value for f in gallery.response.send_message.call_args.kwargs["embed"].fields]
    tales, _ = await bot.gallery.page(guild, 0, "new")
    shown += [t.text for t in tales]
    assert len(shown) > 200 and not any(words.find(text) for text in shown)
    # The model did want the word: the other server, which allows it, gets it.
    i = await run(bot, "story", make_interaction(bot, guild_id=other), start="Harry saw the", length=400, seed=1)
    assert BLOCKED in final_embed(i).description


async def test_reports_hide_a_tale_until_a_moderator_restores_or_removes_it(bot):
    guild, other = next(guilds), next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, report_threshold=2)
    i = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry saw the", length=150, seed=3)
    view = i.edit_original_response.call_args.kwargs["view"]
    tid = tale_id(view)
    await press(view, "Save", make_interaction(bot, guild_id=guild))
    assert [t.id for t in (await bot.gallery.page(guild, 0))[0]] == [tid]

    first = make_interaction(bot, guild_id=guild, user_id=41)
    await press(view, "\U0001f6a9", first)
    await press(view, "\U0001f6a9", first)  # one report per member
    assert ephemeral_text(first) == "Thank you: the moderators will look at it."
    assert first.followup.send.call_args.args[0] == "You have reported this tale already."
    assert not (await bot.gallery.get(guild, tid)).hidden  # 1 of 2 reports
    stranger = make_interaction(bot, guild_id=other, user_id=42)  # another server cannot reach it
    await press(view, "\U0001f6a9", stranger)
    assert f"no tale #{tid}" in ephemeral_text(stranger)

    second = make_interaction(bot, guild_id=guild, user_id=43)
    await press(view, "\U0001f6a9", second)
    assert (await bot.gallery.get(guild, tid)).hidden
    assert "hidden" in second.response.edit_message.call_args.kwargs["content"]  # the message stops showing it
    assert (await bot.gallery.page(guild, 0))[0] == []  # gone from /gallery
    shown = await run(bot, "tale show", make_interaction(bot, guild_id=guild, user_id=44), id=tid)
    assert "hidden until a moderator" in ephemeral_text(shown)
    voter = make_interaction(bot, guild_id=guild, user_id=45)
    await press(view, "👍", voter)
    assert "hidden" in ephemeral_text(voter)

    member = await run(bot, "gallery", make_interaction(bot, guild_id=guild, user_id=44), sort="reported")
    assert "Manage Messages" in ephemeral_text(member)
    listed = await run(bot, "gallery", moderator(bot, guild), sort="reported")
    fields = listed.response.send_message.call_args.kwargs["embed"].fields
    assert [f.name.split(" ")[0] for f in fields] == [f"#{tid}"]
    assert (await run(bot, "tale show", moderator(bot, guild), id=tid)).response.send_message.called

    refused = await run(bot, "tale restore", make_interaction(bot, guild_id=guild, user_id=44), id=tid)
    assert "Manage Messages" in ephemeral_text(refused)
    await run(bot, "tale restore", moderator(bot, guild), id=tid)
    assert [t.id for t in (await bot.gallery.page(guild, 0))[0]] == [tid]
    await press(view, "\U0001f6a9", first)  # reports were cleared: it counts again, alone
    assert not (await bot.gallery.get(guild, tid)).hidden
    await run(bot, "tale remove", moderator(bot, guild), id=tid)
    assert (await bot.gallery.page(guild, 0, "reported"))[0] == []


async def test_the_report_button_survives_a_restart(bot):
    from bot.views import TALE_BUTTONS, ReportButton

    assert ReportButton in TALE_BUTTONS
    assert set(TALE_BUTTONS) <= set(bot._connection._view_store._dynamic_items.values())
    match = ReportButton.__discord_ui_compiled_template__.fullmatch("quill:report:7")
    assert (await ReportButton.from_custom_id(None, None, match)).tale_id == 7


@pytest.mark.slow
def test_bench_filter_reports_matches_interventions_and_cost(weedy_bundle, tmp_path, capsys):
    import json

    from cli import main

    (tmp_path / "book.txt").write_text("The coons sang. A spicy cocktail in Scunthorpe.\n")
    assert main(["bench", "filter", "--model", str(weedy_bundle), "--corpus", str(tmp_path), "--stories", "4",
                 "--starts", "Harry saw the", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["corpus_matches"] == {"coons": 1} and result["corpus_words"] == 8
    assert result["filter_on_4_concurrent_chars_per_s"] > 0 and result["filter_off_4_concurrent_chars_per_s"] > 0
    assert "stories_where_the_model_wanted_a_blocked_word" in result


@pytest.mark.slow
def test_the_filter_works_on_the_device_engine(weedy_bundle):
    """The compiled device loop hands back read-only arrays; a rewind must still take."""
    from model.bundle import load_network
    from model.engine import DeviceEngine, FusedEngine
    from model.generator import StoryRequest

    bundle, network = load_network(weedy_bundle)
    requests = [StoryRequest("Harry saw the", 150, 1.5, seed, blocked_words=(BLOCKED,)) for seed in range(6)]
    stories, _ = write(DeviceEngine(network, rows=8), bundle.vocab, requests)
    assert sum(f for _, f in stories) > 0 and not any(WordFilter.of([BLOCKED]).find(t) for t, _ in stories)
    assert len(write(FusedEngine(network), bundle.vocab, requests)[0]) == len(stories)
