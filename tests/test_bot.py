import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest.mock import MagicMock

import discord
import pytest
import pytest_asyncio

from bot.app import QuillBot
from bot.backends import DatabaseError, IntegrityError
from bot.console import invoke_command, press_button
from bot.settings import Settings
from tests.helpers import (all_sends, button, ephemeral_text, final_embed, label, make_interaction, tale_id,
                           until)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models" / "default"


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "postgresql"])
async def bot(request, remembering_bundle, tmp_path_factory):
    """The bot on each backend: every test that uses it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("db") / "quill.db")
    else:
        db = request.getfixturevalue("postgres_server").new_database()
    bot = QuillBot(Settings(database=db, model=remembering_bundle, queue_size=2, max_batch=2, story_timeout=30))
    async with bot:  # set up as discord.py does before connecting; closed on the way out
        await bot.prepare()
        yield bot


@pytest.fixture(autouse=True)
def fast_edits(request):
    """Every chunk becomes an edit, in each test that uses the bot (one may slow them). Tests that
    do not use it run once, not once per backend."""
    if "bot" in request.fixturenames:
        request.getfixturevalue("bot").writer.edit_interval = 0.0


guilds = iter(range(1000, 2000))  # a fresh server per test keeps settings and cooldowns apart


def command(bot, name):
    group, _, sub = name.partition(" ")
    cmd = bot.tree.get_command(group)
    return cmd.get_command(sub) if sub else cmd


async def run(bot, name, interaction=None, **kwargs):
    interaction = interaction or make_interaction(bot, guild_id=next(guilds))
    interaction.command = command(bot, name)
    await invoke_command(bot, interaction.command, interaction, **kwargs)
    return interaction


async def press(view, label, interaction):
    await press_button(view, button(view, label), interaction)


def no_mentions_everywhere(interaction):
    sends = all_sends(interaction)
    assert sends
    for call in sends:
        mentions = call.kwargs.get("allowed_mentions")
        assert mentions is not None and (mentions.everyone, mentions.users, mentions.roles) == (False, False, False)


async def test_story_flow_defers_streams_and_ends_with_embed(bot):
    i = await run(bot, "story", start="Harry looked at the castle", length=600, seed=5)
    assert i.response.defer.await_args.kwargs == {"thinking": True}
    calls = [name for name, *_ in i.mock_calls]  # deferred before any writing: Discord's 3 s hold whatever it costs
    assert calls.index("response.defer") < calls.index("edit_original_response")
    edits = [c.kwargs["content"] for c in i.edit_original_response.call_args_list if c.kwargs.get("content")]
    assert len(edits) >= 2 and all(e.endswith(" ✍️") for e in edits)  # streamed in pieces
    embed = final_embed(i)
    assert embed.title == "Harry looked at the castle"
    assert embed.description.startswith("Harry looked at the castle") and len(embed.description) >= 540
    assert "temperature 0.5" in embed.footer.text and "seed 5" in embed.footer.text
    assert "tiny" in embed.footer.text and "tale #" in embed.footer.text
    no_mentions_everywhere(i)


async def test_everyone_in_a_prompt_does_not_ping(bot):
    i = await run(bot, "story", start="@everyone Harry", length=200)
    assert final_embed(i).title == "@everyone Harry"
    no_mentions_everywhere(i)


async def test_unknown_characters_are_named(bot):
    i = await run(bot, "story", start="Harry \u2603")
    assert "'\u2603'" in ephemeral_text(i)
    i.response.defer.assert_not_awaited()


async def test_temperature_show_set_refuse_and_range(bot):
    guild = next(guilds)
    shown = await run(bot, "temperature", make_interaction(bot, guild_id=guild))
    assert "**0.5**" in shown.response.send_message.call_args.args[0]
    refused = await run(bot, "temperature", make_interaction(bot, guild_id=guild), value=0.9)
    assert "Manage Server" in ephemeral_text(refused)
    admin = await run(bot, "temperature", make_interaction(bot, guild_id=guild, manage_guild=True), value=0.9)
    assert "0.9" in admin.response.send_message.call_args.args[0]
    assert (await bot.guild_settings.get(guild)).temperature == 0.9
    param = command(bot, "temperature").get_parameter("value")
    assert (param.min_value, param.max_value) == (0.1, 2.0)  # Discord enforces the range...
    with pytest.raises(IntegrityError):  # ...and the database refuses anything else
        await bot.guild_settings.update(guild, temperature=5.0)


async def test_settings_need_manage_server_and_apply_to_the_next_story(bot):
    guild = next(guilds)
    refused = await run(bot, "settings", make_interaction(bot, guild_id=guild), length=150)
    assert "Manage Server" in ephemeral_text(refused)
    admin = make_interaction(bot, guild_id=guild, manage_guild=True)
    await run(bot, "settings", admin, length=150, cooldown=0)
    assert "**150**" in ephemeral_text(admin) and "**0 s**" in ephemeral_text(admin)
    await run(bot, "temperature", make_interaction(bot, guild_id=guild, manage_guild=True), value=1.2)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Ron ran")
    embed = final_embed(story)
    assert "temperature 1.2" in embed.footer.text
    # 150 new characters: it ends at a sentence end past half of 90 % of them (67), or at the last word.
    assert len("Ron ran") + 67 <= len(embed.description) <= 350


async def test_settings_channel_restricts_stories(bot):
    guild = next(guilds)
    channel = discord.Object(555)
    await run(bot, "settings", make_interaction(bot, guild_id=guild, manage_guild=True), channel=channel)
    elsewhere = await run(bot, "story", make_interaction(bot, guild_id=guild, channel_id=1), start="Harry")
    assert "<#555>" in ephemeral_text(elsewhere)
    here = await run(bot, "story", make_interaction(bot, guild_id=guild, channel_id=555), start="Harry", length=150)
    assert final_embed(here) is not None


async def test_cooldown(bot):
    guild = next(guilds)
    await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry", length=150)
    again = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry", length=150)
    assert "Easy there" in ephemeral_text(again)
    other = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=11), start="Harry", length=150)
    assert final_embed(other) is not None  # per member


async def test_busy_queue_says_how_many_wait(bot):
    generator = bot.generator
    os.kill(generator.pid, signal.SIGSTOP)
    try:
        fillers = [asyncio.ensure_future(generator.generate(generator_request(s))) for s in range(4)]
        await until(lambda: generator.waiting == 2)  # two rows busy, two waiting: the line is full
        i = await run(bot, "story", start="Harry", length=150)
        assert "busy" in ephemeral_text(i) and "2 stories are already waiting" in ephemeral_text(i)
    finally:
        os.kill(generator.pid, signal.SIGCONT)
    await asyncio.gather(*fillers)
    retry = await run(bot, "story", start="Harry", length=150)  # the failed story gave the turn back
    assert final_embed(retry) is not None


async def test_a_flooding_server_keeps_to_its_share_and_another_server_still_writes(bot):
    flood, other = next(guilds), next(guilds)
    for guild in (flood, other):
        await bot.guild_settings.update(guild, cooldown_seconds=0)
    share = bot.writer.shares.server_most  # a quarter of 2 rows and 2 waiting: 1

    def decided(interaction) -> bool:  # refused, or deferred to be written
        return bool(ephemeral_text(interaction)) or interaction.response.defer.await_count > 0

    async def until(condition) -> None:
        for _ in range(400):
            if condition():
                return
            await asyncio.sleep(0.025)
        raise AssertionError("timed out")

    os.kill(bot.generator.pid, signal.SIGSTOP)  # no story ends while the flood comes in
    try:
        attempts = [make_interaction(bot, guild_id=flood, user_id=200 + i) for i in range(6)]
        floods = [asyncio.ensure_future(run(bot, "story", i, start="Harry", length=150)) for i in attempts]
        await until(lambda: all(map(decided, attempts)))
        neighbour = make_interaction(bot, guild_id=other, user_id=300)
        told = asyncio.ensure_future(run(bot, "story", neighbour, start="Ron", length=150))
        await until(lambda: decided(neighbour))
        assert not ephemeral_text(neighbour)  # the other server is not refused
    finally:
        os.kill(bot.generator.pid, signal.SIGCONT)
    await asyncio.gather(*floods, told)
    assert final_embed(neighbour) is not None
    refused = [i for i in attempts if ephemeral_text(i) and "its share of the storyteller" in ephemeral_text(i)]
    assert len(refused) == len(attempts) - share
    assert all(i.response.defer.call_count == 0 for i in refused)
    again = await run(bot, "story", make_interaction(bot, guild_id=flood, user_id=201), start="Ron", length=150)
    assert final_embed(again) is not None and not bot.writer.shares.servers  # shares given back


async def test_a_moderator_of_one_channel_does_not_moderate_the_gallery(bot):
    guild = next(guilds)
    channel_mod = make_interaction(bot, guild_id=guild, user_id=7)
    channel_mod.permissions = discord.Permissions(manage_messages=True)  # granted in this channel only
    await run(bot, "gallery", channel_mod, sort="reported")
    assert "Manage Messages" in ephemeral_text(channel_mod) or "permission" in ephemeral_text(channel_mod).lower()
    server_mod = make_interaction(bot, guild_id=guild, user_id=8, manage_messages=True)
    await run(bot, "gallery", server_mod, sort="reported")
    assert server_mod.response.send_message.call_args.kwargs.get("embed") is not None


def test_cooldowns_forget_turns_that_are_over(monkeypatch):
    import time

    from bot import writing
    from bot.limits import COOLDOWN_SECONDS

    cooldowns = writing.Cooldowns()
    monkeypatch.setattr(writing, "PRUNE_AT", 3)
    long_ago = time.monotonic() - COOLDOWN_SECONDS.high - 1
    cooldowns.last = {(9, 1): long_ago, (9, 2): long_ago, (9, 3): time.monotonic()}
    cooldowns.take(9, 4, 0)  # the turns older than the longest cooldown go; a recent one stays
    assert sorted(cooldowns.last) == [(9, 3), (9, 4)]


def test_a_member_keeps_to_two_stories_at_once():
    from bot.writing import Shares, ShareUsed

    shares = Shares(capacity=96)
    shares.take(1, 10), shares.take(1, 10)
    with pytest.raises(ShareUsed, match="2 stories being written"):
        shares.take(1, 10)
    shares.take(1, 11)  # another member of the same server
    shares.give_back(1, 10)
    shares.take(1, 10)
    for _ in range(3):
        shares.give_back(1, 10) if shares.members[1, 10] else shares.give_back(1, 11)
    assert not shares.servers and not shares.members  # nothing kept once nothing is in flight


def generator_request(seed):
    from model.generator import StoryRequest
    return StoryRequest("Harry", 1500, seed=seed)


@pytest.mark.slow
async def test_generator_killed_mid_story_then_next_story_works(bot, monkeypatch):
    interaction = make_interaction(bot, guild_id=next(guilds))
    killed = asyncio.Event()

    async def kill_on_first_edit(*args, **kwargs):
        if not killed.is_set():
            killed.set()
            os.kill(bot.generator.pid, signal.SIGKILL)

    interaction.edit_original_response.side_effect = kill_on_first_edit
    await run(bot, "story", interaction, start="Harry", length=1900)
    assert killed.is_set()
    assert "stopped unexpectedly" in ephemeral_text(interaction)
    assert final_embed(interaction) is None
    await bot.generator.wait_ready(60)
    after = await run(bot, "story", start="Harry", length=200)
    assert final_embed(after) is not None


async def test_gallery_save_vote_pages_and_remove(bot):
    guild = next(guilds)
    admin = make_interaction(bot, guild_id=guild, manage_guild=True)
    await run(bot, "settings", admin, cooldown=0)
    tales = []
    for n in range(7):
        i = await run(bot, "story", make_interaction(bot, guild_id=guild), start=f"Harry {'ran ' * n}", length=150)
        tales.append(i.edit_original_response.call_args.kwargs["view"])
    view, first = tales[0], tale_id(tales[0])
    stranger = make_interaction(bot, guild_id=guild, user_id=99)
    await press(view, "Save", stranger)
    assert "Only the tale's author" in ephemeral_text(stranger)
    for v in tales:
        await press(v, "Save", make_interaction(bot, guild_id=guild))
    assert (await bot.gallery.get(guild, first)).in_gallery
    # votes: one per member, a second press takes it back
    await press(view, "👍", make_interaction(bot, guild_id=guild, user_id=21))
    await press(view, "👍", make_interaction(bot, guild_id=guild, user_id=22))
    last = make_interaction(bot, guild_id=guild, user_id=22)
    await press(view, "👍", last)
    assert (await bot.gallery.get(guild, first)).votes == 1
    updated = last.response.edit_message.call_args.kwargs
    assert label(button(updated["view"], "👍")) == "👍 1" and updated["embed"].footer.text.endswith("👍 1")
    assert label(button(updated["view"], "In the gallery")) and button(updated["view"], "In the gallery").item.disabled
    # pagination: top sort puts the voted tale first, 5 per page, only the invoker turns pages
    g = await run(bot, "gallery", make_interaction(bot, guild_id=guild), sort="top")
    embed, pager = g.response.send_message.call_args.kwargs["embed"], g.response.send_message.call_args.kwargs["view"]
    assert embed.fields[0].name.startswith(f"#{first} ") and embed.footer.text == "page 1 of 2"
    assert button(pager, "Previous").disabled and not button(pager, "Next").disabled
    other = make_interaction(bot, guild_id=guild, user_id=77)
    await press(pager, "Next", other)
    assert "Only the member who opened" in ephemeral_text(other)
    turner = make_interaction(bot, guild_id=guild)
    await press(pager, "Next", turner)
    page2 = turner.response.edit_message.call_args.kwargs["embed"]
    assert page2.footer.text == "page 2 of 2" and len(page2.fields) == 2
    await pager.on_timeout()
    assert all(item.disabled for item in pager.children)
    # remove: not by a stranger, yes by the author, yes by a moderator
    target = tale_id(tales[1])
    denied = await run(bot, "tale remove", make_interaction(bot, guild_id=guild, user_id=99), id=target)
    assert "Only the tale's author" in ephemeral_text(denied)
    await run(bot, "tale remove", make_interaction(bot, guild_id=guild), id=target)
    mod = await run(bot, "tale remove", make_interaction(bot, guild_id=guild, user_id=98, manage_messages=True),
                    id=tale_id(tales[2]))
    assert "was removed" in ephemeral_text(mod)
    gone = await run(bot, "tale show", make_interaction(bot, guild_id=guild), id=target)
    assert f"no tale #{target}" in ephemeral_text(gone)


async def test_an_unsaved_tale_is_shown_only_to_members_who_can_read_its_channel(bot):
    from unittest.mock import MagicMock

    import discord

    guild = next(guilds)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=40), start="Harry", length=150)
    tid = tale_id(story.edit_original_response.call_args.kwargs["view"])  # told in a staff channel, not saved

    def member(can_see: bool, user_id: int = 41):
        interaction = make_interaction(bot, guild_id=guild, user_id=user_id)
        channel = MagicMock(spec_set=discord.TextChannel)
        channel.permissions_for.return_value = discord.Permissions(view_channel=can_see)
        interaction.guild.get_channel_or_thread.return_value = channel
        return interaction

    for command in ("tale show", "tale export"):
        outsider = await run(bot, command, member(False), id=tid)
        assert f"no tale #{tid}" in ephemeral_text(outsider)  # as if there were none
        outsider.response.defer.assert_not_called()
        for allowed in (member(True), member(False, user_id=40)):  # one who can read it; its author
            await run(bot, command, allowed, id=tid)
            sent = allowed.response.send_message.call_args.kwargs
            assert (sent.get("embed") or sent.get("file")) and not sent.get("ephemeral")
    gone = member(False)
    gone.guild.get_channel_or_thread.return_value = None  # the channel was deleted
    assert f"no tale #{tid}" in ephemeral_text(await run(bot, "tale show", gone, id=tid))
    await bot.gallery.save_to_gallery(guild, tid)  # saved: the whole server may read it
    assert not ephemeral_text(await run(bot, "tale show", member(False), id=tid))


async def test_two_guilds_never_see_each_other(bot):
    a, b = next(guilds), next(guilds)
    story = await run(bot, "story", make_interaction(bot, guild_id=a), start="Harry", length=150)
    view = story.edit_original_response.call_args.kwargs["view"]
    await press(view, "Save", make_interaction(bot, guild_id=a))
    tid = tale_id(view)
    seen = await run(bot, "tale show", make_interaction(bot, guild_id=b), id=tid)
    assert f"no tale #{tid}" in ephemeral_text(seen)
    removed = await run(bot, "tale remove", make_interaction(bot, guild_id=b, manage_messages=True), id=tid)
    assert f"no tale #{tid}" in ephemeral_text(removed)
    voter = make_interaction(bot, guild_id=b)
    await press(view, "👍", voter)  # a button from server A pressed in server B
    assert f"no tale #{tid}" in ephemeral_text(voter)
    g = await run(bot, "gallery", make_interaction(bot, guild_id=b))
    assert not g.response.send_message.call_args.kwargs["embed"].fields
    assert (await bot.gallery.get(a, tid)).votes == 0


async def test_tale_buttons_work_after_a_restart(bot):
    """Buttons carry the tale id: discord.py rebuilds them from the custom_id, no view in memory."""
    from bot.views import TALE_BUTTONS, VoteButton

    guild = next(guilds)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry", length=150)
    custom_id = button(story.edit_original_response.call_args.kwargs["view"], "👍").custom_id
    registered = set(bot._connection._view_store._dynamic_items.values())  # what discord.py dispatches to
    assert set(TALE_BUTTONS) <= registered
    match = VoteButton.__discord_ui_compiled_template__.fullmatch(custom_id)
    rebuilt = await VoteButton.from_custom_id(None, None, match)
    voter = make_interaction(bot, guild_id=guild, user_id=31)
    await rebuilt.callback(voter)
    assert (await bot.gallery.get(guild, rebuilt.tale_id)).votes == 1


async def test_unexpected_errors_are_logged_not_shown(bot, caplog, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bot.guild_settings, "get", broken)
    i = await run(bot, "temperature")
    assert ephemeral_text(i) == "Something went wrong on my side; it has been logged. Please try again."
    assert "disk on fire" in caplog.text and "temperature" in caplog.text


def test_database_killed_mid_write_keeps_confirmed_tales(tmp_path):
    db = tmp_path / "crash.db"
    writer = textwrap.dedent(f"""
        import asyncio, sys
        from bot.db import Database, GalleryStore
        async def main():
            store = GalleryStore(await Database.open({str(db)!r}))
            n = 0
            while True:
                tale = await store.add(guild_id=1, channel_id=1, author_id=1, author_name="a", start="s",
                                       text="x" * 2000, temperature=0.5, seed=n, model="m", card_hash="h")
                print(tale.id, flush=True)  # confirmed to the member only after the commit
                n += 1
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    confirmed = [int(proc.stdout.readline()) for _ in range(200)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row[0] for row in conn.execute("SELECT id FROM tales")}
    assert set(confirmed) <= stored


def run_console_with(commands: str, bundle, folder) -> tuple[str, str]:
    """`quill run` with no token (the console), fed `commands`; its stdout and stderr."""
    env = {**os.environ, "QUILL_MODEL": str(bundle), "QUILL_DATABASE": str(folder / "console.db")}
    env.pop("DISCORD_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "cli", "run"], input=commands, capture_output=True, text=True,
                          env=env, cwd=folder, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_console_mode_end_to_end(tiny_bundle, tmp_path):
    commands = "\n".join(["/story start:Harry looked length:300 seed:3", "press save", "press vote",
                          "/temperature 0.8", "/temperature", "/gallery", "/tale 1", "/tale 42",
                          "/temperature 7", "/settings cooldown:30", "/story start:Harry looked length:300", "/HELP",
                          "/settings cooldown:0", "/STORY start:Dear diary: today Harry length:120",
                          "/story Harry length:100", "quit"]) + "\n"
    out, stderr = run_console_with(commands, tiny_bundle, tmp_path)
    assert "── Harry looked ──" in out and "tale #1" in out  # /tale 1 shows it with its title
    tale = out.split("commands.\n", 1)[1].split("\n(temperature", 1)[0].removeprefix("── Harry looked ──\n")
    assert tale.startswith("Harry looked") and out.count(tale) == 3  # streamed once (not again), the vote, /tale 1
    assert "[In the gallery] (off)" in out and "👍 1" in out
    assert "Saved: tale #1 is in this server's gallery now." in out
    assert "Temperature set to 0.8" in out and "temperature is 0.8" in out and "**" not in out
    # "diary:" is text, not an option: the whole start reaches the model (whose tiny vocabulary lacks ':')
    assert "does not know these characters: ':'" in out and "no option" not in out
    assert "\nHarry" in out and "needs start" not in out  # /story Harry length:100
    assert "help | quit" in out and "unknown command" not in out
    assert "#1 · Harry looked · 👍 1" in out
    assert "no tale #42" in out
    assert "value must be between 0.1 and 2.0" in out
    assert out.count("Easy there") == 1  # the cooldown once set (the console's starts at 0), from the same cog code
    assert "Traceback" not in out + stderr
    assert (tmp_path / "console.db").exists()


@pytest.mark.parametrize("command", ["run", "sync"])
def test_a_refused_token_is_one_clear_line_and_exit_1(monkeypatch, capsys, tmp_path, command):
    import cli

    async def refuse(self, token):
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.setattr(QuillBot, "login", refuse)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-token")
    monkeypatch.setenv("QUILL_DATABASE", str(tmp_path / "q.db"))
    assert cli.main([command]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"quill {command}: error: Discord refused DISCORD_TOKEN")


async def test_unusable_database_file_is_a_clear_error(tmp_path):
    from bot.db import Database

    (tmp_path / "folder.db").mkdir()
    with pytest.raises(DatabaseError, match="cannot open the database .*folder.db"):
        await Database.open(tmp_path / "folder.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="junk.db"):
        await Database.open(tmp_path / "junk.db")


# -- issue 9: the Discord contract ---------------------------------------------------------------
def test_streamed_edits_never_pass_discords_limit():
    from bot.views import CONTENT_LIMIT, streaming_content

    for n in range(1980, 2030):
        content = streaming_content("x" * n)
        assert len(content) <= CONTENT_LIMIT, n
        assert content.endswith("x \u270d\ufe0f")


async def test_a_failing_display_never_costs_the_tale(bot, monkeypatch):
    """Every edit answers 400, as Discord does for content over 2,000: the tale is stored anyway."""
    i = make_interaction(bot, guild_id=next(guilds))
    i.edit_original_response.side_effect = discord.HTTPException(
        type("R", (), {"status": 400, "reason": "Bad Request"})(), {"code": 50035, "message": "Invalid Form Body"})
    i = await run(bot, "story", interaction=i, start="Harry", length=300, seed=2)
    saved = ephemeral_text(i)
    assert saved and saved.startswith("Your tale is saved as #")
    tale = await bot.gallery.get(i.guild_id, int(saved.split("#")[1].split(":")[0]))
    assert tale.text.startswith("Harry") and len(tale.text) > 200


async def test_buttons_carry_booleans(bot):
    i = await run(bot, "story", start="Harry", length=200, seed=4)
    view = i.edit_original_response.call_args.kwargs["view"]
    await press(view, "Save", make_interaction(bot, guild_id=i.guild_id))
    tale = await bot.gallery.get(i.guild_id, tale_id(view))
    assert tale.in_gallery is True
    from bot.views import story_view

    for row in story_view(tale).to_components():
        for component in row["components"]:
            assert type(component.get("disabled", False)) is bool


@pytest.mark.slow
async def test_slow_edits_do_not_hold_the_tale_back(bot):
    """Discord under load takes about a second per edit; the tale must not wait for one per chunk."""
    writer = bot.writer
    writer.edit_interval = 0.05
    i = make_interaction(bot, guild_id=next(guilds))

    async def slow_edit(**kwargs):
        await asyncio.sleep(0.5)

    i.edit_original_response.side_effect = slow_edit
    i = await run(bot, "story", interaction=i, start="Harry", length=1500, seed=6)
    streamed = [c for c in i.edit_original_response.call_args_list if "embed" not in c.kwargs]
    assert final_embed(i).description.startswith("Harry")
    # Each chunk as its own edit would be dozens of 0.5 s edits; everything ready goes in each one.
    assert len(streamed) <= 4, len(streamed)


async def test_stale_commands_get_a_plain_answer_and_a_warning(bot, caplog):
    from discord import app_commands

    for error in (app_commands.CommandNotFound("oldcommand", []),
                  app_commands.CommandSignatureMismatch(command(bot, "story"))):
        i = make_interaction(bot, guild_id=next(guilds))
        caplog.clear()
        await bot.tree.on_error(i, error)
        assert ephemeral_text(i) == "This command was updated; try again in a minute."
        assert "stale command" in caplog.text and "ERROR" not in caplog.text  # not an internal error


async def test_commands_sync_only_when_the_tree_changed(bot, monkeypatch):
    from unittest.mock import AsyncMock

    from discord import app_commands

    sync = AsyncMock(return_value=[])
    monkeypatch.setattr(bot.tree, "sync", sync)
    await bot.db.set_meta("command_tree:global", "")  # as after an update
    assert await bot.sync_commands() is True
    assert await bot.sync_commands() is False  # a plain restart sends nothing
    assert sync.await_count == 1

    @app_commands.command(name="extra", description="a new command")
    async def extra(interaction):
        pass

    bot.tree.add_command(extra)
    try:
        assert await bot.sync_commands() is True  # the tree changed
    finally:
        bot.tree.remove_command("extra")
    assert await bot.sync_commands() is True and await bot.sync_commands() is False
    assert await bot.sync_commands(force=True) is True  # quill sync
    assert sync.await_count == 4


def test_mocks_are_strict(bot):
    i = make_interaction(bot)
    with pytest.raises(AttributeError):
        i.gulid_id = 3  # a typo fails instead of passing silently
    with pytest.raises(AttributeError):
        i.response.sned_message


def test_quill_sync_needs_the_token(monkeypatch, capsys):
    import cli

    monkeypatch.setenv("DISCORD_TOKEN", "")
    assert cli.main(["sync"]) == 2
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_in_the_console_exits_cleanly(tiny_bundle, tmp_path):
    env = {**os.environ, "QUILL_MODEL": str(tiny_bundle), "QUILL_DATABASE": str(tmp_path / "c.db")}
    env.pop("DISCORD_TOKEN", None)
    # As from a terminal: a shell's background job (CI under nohup) would pass SIGINT on ignored.
    process = subprocess.Popen([sys.executable, "-m", "cli", "run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().startswith("Quill console")  # ready, waiting for a line
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)  # stdin stays open: an end of input would be a clean exit of its own
        err = process.stderr.read()
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


async def test_a_migration_with_a_trigger_runs_whole(tmp_path, monkeypatch):
    from bot import db

    trigger = """
    CREATE TABLE audit (tale_id INTEGER);
    CREATE TRIGGER tale_added AFTER INSERT ON tales BEGIN
        INSERT INTO audit (tale_id) VALUES (new.id);
    END;
    """
    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, trigger])
    database = await db.Database.open(tmp_path / "t.db")
    try:
        store = db.GalleryStore(database)
        await store.add(guild_id=1, channel_id=1, author_id=1, author_name="a", start="s", text="t",
                        temperature=0.5, seed=1, model="m", card_hash="h")
        assert (await database.fetchone("SELECT COUNT(*) AS n FROM audit"))["n"] == 1
        assert (await database.fetchone("SELECT MAX(version) AS v FROM schema_version"))["v"] == len(db.MIGRATIONS)
    finally:
        await database.close()


async def test_a_failing_migration_leaves_nothing_half_done(tmp_path, monkeypatch):
    from bot import db

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, "CREATE TABLE half (x INTEGER); CREATE TABLE half (y);"])
    with pytest.raises(DatabaseError):
        await db.Database.open(tmp_path / "t.db")
    monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS[:-1])
    database = await db.Database.open(tmp_path / "t.db")
    try:
        assert await database.fetchone("SELECT name FROM sqlite_master WHERE name = 'half'") is None  # rolled back
    finally:
        await database.close()


# -- issue 12: tales that go on ----------------------------------------------------------------
async def continue_tale(bot, view, guild, user_id=10):
    i = make_interaction(bot, guild_id=guild, user_id=user_id)
    await press(view, "Continue", i)
    return i


async def test_continue_writes_chapters_up_to_the_cap(bot):
    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, max_chapters=3, story_length=200)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry looked", length=300, seed=1)
    view = story.edit_original_response.call_args.kwargs["view"]
    tid = tale_id(view)
    second = await continue_tale(bot, view, guild, user_id=22)
    embed = final_embed(second)
    assert embed.title == "Harry looked · chapter 2" and "asked by Luna" in embed.footer.text
    assert "chapter 2 of 2" in embed.footer.text and len(embed.description) > 200 * 0.45  # a sentence end past half
    third = await continue_tale(bot, second.edit_original_response.call_args.kwargs["view"], guild)
    assert "chapter 3 of 3" in final_embed(third).footer.text
    refused = await continue_tale(bot, view, guild)
    assert "all the chapters it may have (3" in ephemeral_text(refused)
    chapters = await bot.gallery.chapters(guild, tid)
    assert [c.number for c in chapters] == [2, 3] and all(c.seed is not None for c in chapters)
    assert (await bot.gallery.get(guild, tid)).chapters == 3


async def test_a_tale_rebuilds_from_its_seeds(bot):
    """Each chapter is primed with the tale so far and stored with its seed: the same seeds
    write the same tale again."""
    from model.generator import StoryRequest

    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, story_length=100)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Ron ran", length=100, seed=7)
    view = story.edit_original_response.call_args.kwargs["view"]
    for _ in range(2):
        view = (await continue_tale(bot, view, guild)).edit_original_response.call_args.kwargs["view"]
    tale = await bot.gallery.get(guild, tale_id(view))
    chapters = await bot.gallery.chapters(guild, tale.id)
    settings = await bot.guild_settings.get(guild)
    assert tale.cast_entries  # the default cast, as far as the tiny model can write it
    rebuilt = (await bot.generator.generate(StoryRequest("Ron ran", 100, settings.temperature, 7,
                                                         cast=tale.cast_entries))).text
    assert rebuilt == tale.text
    from_reading = bot.generator.vocab.normalisation.from_reading
    for chapter in chapters:  # the tale is shorter than a prompt's most: all of it primes the chapter
        again = await bot.generator.generate(StoryRequest("", 100, settings.temperature, chapter.seed,
                                                          context=from_reading(rebuilt), cast=tale.cast_entries))
        assert again.text == chapter.text
        rebuilt += chapter.text


async def test_continuing_a_tale_in_paragraphs_keeps_them_and_every_character(bot, monkeypatch):
    """The chapter is primed with the tale's paragraph breaks, and is exactly what the model writes
    after the tale: checked against a member typing the same tale as a start."""
    from bot.views import story_view
    from model.generator import StoryRequest

    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, story_length=150)
    text = "Harry looked at the castle.\n\nRon ran to the door.\n\nThe owl flew over the hall."
    tale = await bot.gallery.add(guild_id=guild, channel_id=100, author_id=10, author_name="Luna", start="Harry",
                                 text=text, temperature=0.5, seed=1, model="tiny", card_hash="")
    primed = []
    real = bot.generator.stream

    def spy(request):
        primed.append(request.prime)
        return real(request)

    monkeypatch.setattr(bot.generator, "stream", spy)
    await continue_tale(bot, story_view(tale), guild)
    [chapter] = await bot.gallery.chapters(guild, tale.id)
    assert primed == ["Harry looked at the castle.\nRon ran to the door.\nThe owl flew over the hall."]
    settings = await bot.guild_settings.get(guild)
    typed = await bot.generator.generate(StoryRequest(text, 150, settings.temperature, chapter.seed))
    assert typed.text == text + chapter.text and len(chapter.text) > 150 * 0.45


@pytest.mark.slow
async def test_a_generator_failure_mid_chapter_keeps_the_earlier_ones(bot, monkeypatch):
    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, story_length=1500)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Snape", length=300, seed=2)
    view = story.edit_original_response.call_args.kwargs["view"]
    pid = bot.generator.pid
    writer = bot.writer
    real = writer._stream

    async def kill_midway(interaction, request, began):
        os.kill(pid, signal.SIGKILL)
        return await real(interaction, request, began)

    failures = bot.metrics.registry.get_sample_value("quill_stories_failed_total")
    restarts = bot.generator.restarts
    monkeypatch.setattr(writer, "_stream", kill_midway)
    failed = await continue_tale(bot, view, guild)
    monkeypatch.setattr(writer, "_stream", real)
    assert "stopped unexpectedly" in ephemeral_text(failed)
    assert bot.metrics.registry.get_sample_value("quill_stories_failed_total") == failures + 1
    tale = await bot.gallery.get(guild, tale_id(view))
    assert tale.chapters == 1 and tale.text.startswith("Snape")  # the first chapter is kept
    await bot.generator.wait_ready(60)
    assert bot.generator.restarts == restarts + 1
    again = await continue_tale(bot, view, guild)  # and the turn was given back
    assert "chapter 2" in final_embed(again).title


async def test_show_pages_through_chapters_and_export_gives_the_whole_tale(bot):
    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, story_length=150)
    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Hermione", length=150, seed=3)
    view = story.edit_original_response.call_args.kwargs["view"]
    await continue_tale(bot, view, guild, user_id=77)
    tid = tale_id(view)
    shown = await run(bot, "tale show", make_interaction(bot, guild_id=guild), id=tid)
    first = shown.response.send_message.call_args.kwargs
    assert first["embed"].title == "Hermione" and "2 chapters" in first["embed"].footer.text
    stranger = make_interaction(bot, guild_id=guild, user_id=31)
    await press(first["view"], "Next", stranger)
    assert "Only the member who opened this gallery" in ephemeral_text(stranger)
    turn = make_interaction(bot, guild_id=guild)
    await press(first["view"], "Next", turn)
    page = turn.response.edit_message.call_args.kwargs["embed"]
    assert page.title == "Hermione · chapter 2" and "asked by Luna" in page.footer.text
    # The tale's own buttons come along: any member can go on with it from here, days later.
    assert [label(item) for item in first["view"].children][2:] == ["Save to gallery", "👍 0", "Again", "Continue",
                                                                    "\U0001f6a9 Report"]
    third = await continue_tale(bot, first["view"], guild, user_id=31)
    assert "chapter 3 of 3" in final_embed(third).footer.text
    exported = await run(bot, "tale export", make_interaction(bot, guild_id=guild), id=tid)
    attachment = exported.response.send_message.call_args.kwargs["file"]
    text = attachment.fp.read().decode()
    chapters = await bot.gallery.chapters(guild, tid)
    assert attachment.filename == f"tale-{tid}.txt" and text.startswith("Hermione\nA tale of Luna")
    assert "Chapter 1" in text and "Chapter 2 (asked for by Luna)" in text and chapters[0].text.strip() in text


async def test_writing_together_in_a_thread(bot):
    from bot.views import LineModal

    guild, other = next(guilds), next(guilds)
    for g in (guild, other):
        await bot.guild_settings.update(g, cooldown_seconds=0, together_length=150)
    opener = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=1, name="Harry"),
                       start="Harry looked", together=True)
    thread = opener.channel.create_thread.return_value
    opening = thread.send.call_args.kwargs
    assert opening["embed"].title == "Harry looked" and opener.channel.create_thread.await_args.kwargs["name"]
    assert "together in <#101>" in opener.edit_original_response.call_args.kwargs["content"]
    view = opening["view"]
    tid = tale_id_of(view)

    press_line = make_interaction(bot, guild_id=guild, user_id=2, name="Ron")
    await press(view, "Add a line", press_line)
    modal = press_line.response.send_modal.await_args.args[0]
    assert isinstance(modal, LineModal) and modal.line.max_length == 300 and modal.tale_id == tid

    writer = bot.writer
    ron = make_interaction(bot, guild_id=guild, user_id=2, name="Ron")
    elsewhere = await run(bot, "story", make_interaction(bot, guild_id=other, user_id=3), start="Snape",
                          together=True)
    other_tid = tale_id_of(elsewhere.channel.create_thread.return_value.send.call_args.kwargs["view"])
    # two servers writing at once
    await asyncio.gather(writer.add_line(ron, tid, "Ron looked at the owl."),
                         writer.add_line(make_interaction(bot, guild_id=other, user_id=3), other_tid, "The hall was dark."))
    turn = ron.edit_original_response.call_args.kwargs["embed"]
    assert turn.description.startswith("**Ron:** Ron looked at the owl.\n\n") and len(turn.description) > 100
    parts = await bot.gallery.chapters(guild, tid)
    assert [(c.kind, c.author_name) for c in parts] == [("line", "Ron"), ("reply", "Quill")]
    assert parts[0].text.strip() == "Ron looked at the owl."
    assert [c.text.strip() for c in await bot.gallery.chapters(other, other_tid)][0] == "The hall was dark."

    plain = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=5), start="Harry", length=150)
    plain_tid = tale_id(plain.edit_original_response.call_args.kwargs["view"])
    stray = make_interaction(bot, guild_id=guild, user_id=4)
    await press_button_error(writer.add_line(stray, plain_tid, "Ron ran."), stray)  # a tale told alone takes no lines
    assert "is not written together" in ephemeral_text(stray)
    assert await bot.gallery.chapters(guild, plain_tid) == []

    unknown = make_interaction(bot, guild_id=guild, user_id=4)
    await press_button_error(writer.add_line(unknown, tid, "Ron saw \u2603"), unknown)
    assert "does not know these characters: '\u2603'" in ephemeral_text(unknown)
    assert len(await bot.gallery.chapters(guild, tid)) == 2  # nothing written

    not_opener = make_interaction(bot, guild_id=guild, user_id=2)
    await press(view, "Finish", not_opener)
    assert "Only the member who opened this tale" in ephemeral_text(not_opener)
    finisher = make_interaction(bot, guild_id=guild, user_id=1, name="Harry")
    await press(view, "Finish", finisher)
    finished = finisher.response.send_message.call_args.kwargs
    assert finished["embed"].fields[0].value == "Harry, Ron"
    late = make_interaction(bot, guild_id=guild, user_id=2)
    await press(view, "Add a line", late)
    assert "is finished" in ephemeral_text(late)
    await press(finished["view"], "Save", make_interaction(bot, guild_id=guild, user_id=1))
    gallery = await run(bot, "gallery", make_interaction(bot, guild_id=guild))
    assert gallery.response.send_message.call_args.kwargs["embed"].fields[0].value.endswith("— Harry, Ron")


def tale_id_of(view) -> int:
    return int(button(view, "Add a line").custom_id.rsplit(":", 1)[1])


async def press_button_error(coroutine, interaction):
    from bot.errors import answer_error

    try:
        await coroutine
    except Exception as error:  # as the modal's on_error does
        await answer_error(interaction, error)


async def test_a_start_whose_letters_were_folded_says_so(bot):
    i = await run(bot, "story", make_interaction(bot, guild_id=next(guilds)), start="H\u00e0rry looked", length=100)
    assert final_embed(i).description.startswith("Harry looked")
    assert ephemeral_text(i) == "Quill wrote \u00e0\u2192a in your words: its alphabet has no such letters."
    assert i.followup.send.call_count == 1  # after the tale is shown, not in place of it
    plain = await run(bot, "story", make_interaction(bot, guild_id=next(guilds)), start="Harry looked", length=100)
    assert ephemeral_text(plain) is None


def console_commands(block: str) -> list[str]:
    """The commands in a block of the README or of `help`, as typed: split where two or more spaces
    or a | part them; placeholders filled in."""
    commands = [c.strip() for line in block.splitlines() for c in re.split(r"\s{2,}|\s\|\s", line.strip())]
    fill = {"<your line>": "Ron laughed at the hat.", "<word>": "dementor"}
    return [re.sub(r"<[^>]+>", lambda m: fill[m.group()], c) for c in commands if c]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["README", "help"])
def test_every_console_command_in_the_readme_and_help_works_as_typed(source, tmp_path):
    """Each as a newcomer types it, in its order, after three stories (so tale 3 exists), on the
    shipped model at the console's own settings (its cooldown included)."""
    from bot.console import HELP

    if source == "README":
        readme = (ROOT / "README.md").read_text()
        block = readme.split("as on Discord:\n\n```\n", 1)[1].split("```", 1)[0]
    else:
        block = HELP
    typed = [c for c in console_commands(block) if c not in ("help", "quit")]
    assert any(c.startswith("press report") for c in typed) and any(c.startswith("add ") for c in typed)
    stories = ["/story start:Harry Potter length:100"] * 3
    out, stderr = run_console_with("\n".join(stories + typed + ["quit"]) + "\n", SHIPPED, tmp_path)
    refusals = [line for line in out.splitlines() if line.startswith("error:") or line.startswith(
        "(only you see this)") and re.search(r"Easy there|no tale|needs|not valid|can't|cannot|only", line[19:])]
    assert refusals == [] and "Traceback" not in stderr, (typed, refusals)
    assert "you: Ron laughed at the hat." in out and "Thank you: the moderators will look at it." in out


@pytest.mark.slow
def test_console_writes_together(tiny_bundle, tmp_path):
    commands = "\n".join(["/settings cooldown:0", "/story start:Harry looked together:true", "add Ron ran.",
                          "finish", "add Too late.", "quit"]) + "\n"
    out, _ = run_console_with(commands, tiny_bundle, tmp_path)
    assert "── thread: Quill: Harry looked ──" in out and "[Add a line]  [Finish]" in out
    assert "you: Ron ran." in out and "Written together by" in out
    assert "no tale to add a line to" in out  # after Finish, the view offers no Add a line


def test_settings_read_the_engine_choice():
    from bot.settings import SettingsError

    assert Settings.from_env({"QUILL_ENGINE": "CPU"}, dotenv=False).generator_config().engine == "cpu"
    assert Settings.from_env({}, dotenv=False).engine == "auto"
    with pytest.raises(SettingsError, match="QUILL_ENGINE must be one of auto, cpu, device"):
        Settings.from_env({"QUILL_ENGINE": "gpu"}, dotenv=False)


def test_the_metrics_listen_on_this_machine_unless_told_otherwise_and_the_example_env_sets_no_defaults():
    from pathlib import Path

    from dotenv import dotenv_values

    assert Settings.from_env({}, dotenv=False).metrics_host == "127.0.0.1"
    assert Settings.from_env({"QUILL_METRICS_HOST": "0.0.0.0"}, dotenv=False).metrics_host == "0.0.0.0"
    example = dotenv_values(Path(__file__).resolve().parent.parent / ".env.example")
    assert "QUILL_DATABASE" not in example and "QUILL_METRICS_PORT" not in example  # the image's own stay
    settings = Settings.from_env({k: v or "" for k, v in example.items()}, dotenv=False)
    assert settings.database == Settings().database and settings.metrics_port is None


def test_counts_and_refusals_read_as_sentences():
    from bot.db import TaleNotFound
    from bot.errors import counted, member_message

    assert (counted(1, "chapter"), counted(2, "part"), counted(1, "report", bold=True)) == \
        ("1 chapter", "2 parts", "**1** report")
    assert member_message(TaleNotFound(999)) == "There is no tale #999 in this server."


def test_settings_read_the_search_width():
    from bot.settings import SettingsError

    assert Settings.from_env({"QUILL_SEARCH_WIDTH": "1"}, dotenv=False).generator_config().search_width == 1
    assert Settings.from_env({}, dotenv=False).generator_config().search_width == 8
    with pytest.raises(SettingsError, match="QUILL_SEARCH_WIDTH must be a whole number"):
        Settings.from_env({"QUILL_SEARCH_WIDTH": "wide"}, dotenv=False)


async def test_settings_set_chapters_and_together_length(bot):
    guild = next(guilds)
    i = await run(bot, "settings", make_interaction(bot, guild_id=guild, manage_guild=True), max_chapters=4,
                  together_length=500, report_threshold=3)
    assert "at most **4** chapters" in ephemeral_text(i) and "**500** characters after each line" in ephemeral_text(i)
    s = await bot.guild_settings.get(guild)
    assert (s.max_chapters, s.together_length, s.report_threshold) == (4, 500, 3)


# Issue 18: threads, lengths, words, limits.

async def test_a_thread_of_the_story_channel_counts_as_that_channel(bot):
    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, together_length=100, channel_id=100)
    opener = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=1), start="Harry looked",
                       together=True)
    tid = tale_id_of(opener.channel.create_thread.return_value.send.call_args.kwargs["view"])
    writer = bot.writer

    def in_thread(parent_id):
        interaction = make_interaction(bot, guild_id=guild, user_id=2, channel_id=101)
        interaction.channel = MagicMock(spec_set=discord.Thread)
        interaction.channel.parent_id = parent_id
        return interaction

    line, reply = await writer.add_line(in_thread(100), tid, "Ron ran.")
    assert line.text.strip() == "Ron ran." and reply.kind == "reply"
    elsewhere = in_thread(555)
    await press_button_error(writer.add_line(elsewhere, tid, "Ron ran."), elsewhere)
    assert "I write stories in <#100>" in ephemeral_text(elsewhere)


async def test_length_counts_the_new_characters(bot):
    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0)
    start = ("Harry looked at the castle. " * 6)[:161].strip()
    i = await run(bot, "story", make_interaction(bot, guild_id=guild), start=start, length=100, seed=3)
    tale = await bot.gallery.get(guild, tale_id(i.edit_original_response.call_args.kwargs["view"]))
    written = bot.generator.vocab.normalisation.from_reading  # the model's characters, as length counts them
    assert tale.text.startswith(start) and 89 <= len(written(tale.text)) - len(start) <= 140 and tale.length == 100

    again = make_interaction(bot, guild_id=guild)
    await press(i.edit_original_response.call_args.kwargs["view"], "Again", again)
    retold = await bot.gallery.get(guild, tale_id(again.edit_original_response.call_args.kwargs["view"]))
    assert retold.id != tale.id and retold.length == 100 and retold.seed != tale.seed  # the length, a new seed
    # a sentence end past half the length (less a final space), at most 40 past it
    assert 44 <= len(written(retold.text)) - len(start) <= 140


async def test_writing_together_honours_length_and_seed(bot):
    openings = []
    for _ in range(2):
        guild = next(guilds)
        opener = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Snape", length=400,
                           seed=9, together=True)
        tid = tale_id_of(opener.channel.create_thread.return_value.send.call_args.kwargs["view"])
        openings.append(await bot.gallery.get(guild, tid))
    assert openings[0].text == openings[1].text and openings[0].seed == 9
    written = bot.generator.vocab.normalisation.from_reading(openings[0].text)  # a break reads as two lines
    assert 360 <= len(written) - len("Snape") <= 460 and openings[0].length == 400


async def test_a_start_of_the_wrong_type_is_refused_clearly(bot, caplog):
    from bot.errors import answer_error

    i = make_interaction(bot, guild_id=next(guilds))
    try:
        await bot.writer.tell(i, 123)
    except Exception as error:
        await answer_error(i, error)
    assert ephemeral_text(i) == "The start text must be text, not int."
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_who_wrote_a_tale_has_one_definition():
    from bot.cogs.gallery import tale_text
    from bot.db import Chapter, Tale, tale_so_far, writers

    tale = Tale(7, 1, 2, 10, "Ann", "Harry", "Harry ran.", 0.5, 1, "m", "h", "2026-12-07T00:00:00+00:00", 0, True,
                chapters=4)
    chapters = [Chapter(7, 2, "chapter", 11, "Bo", " He sat.", 2, ""), Chapter(7, 3, "line", 12, "Cy", "\nCy ran.", 0, ""),
                Chapter(7, 4, "reply", 0, "Quill", " So did Ann.", 3, ""), Chapter(7, 5, "line", 11, "Bo", "\nBo.", 0, "")]
    assert writers(tale, chapters) == ["Ann", "Bo", "Cy"]  # first parts' order; the bot's replies are no one's
    assert "A tale of Ann, Bo, Cy, told by Quill" in tale_text(tale, chapters)
    assert tale_so_far(tale, chapters) == "Harry ran. He sat.\nCy ran. So did Ann.\nBo."


def test_words_a_member_sees():
    from discord import app_commands

    from bot.errors import CooldownActive, member_message
    from model.generator import GeneratorBusy

    assert "1 story is already waiting" in str(GeneratorBusy(1)) and "2 stories are" in str(GeneratorBusy(2))
    assert str(CooldownActive(0.2)).endswith("in 1 s.") and str(CooldownActive(4.01)).endswith("in 5 s.")
    error = app_commands.TransformerError("tomorrow", discord.AppCommandOptionType.integer, MagicMock())
    assert member_message(error) == "That value is not valid: \u201ctomorrow\u201d."


async def test_the_database_holds_the_same_limits(bot):
    from bot import limits

    guild = next(guilds)
    columns = {"temperature": limits.TEMPERATURE, "story_length": limits.STORY_LENGTH,
               "cooldown_seconds": limits.COOLDOWN_SECONDS, "report_threshold": limits.REPORT_THRESHOLD,
               "max_chapters": limits.MAX_CHAPTERS, "together_length": limits.TOGETHER_LENGTH}
    step = {"temperature": 0.01}
    for column, limit in columns.items():
        for value in (limit.low, limit.high):
            assert getattr(await bot.guild_settings.update(guild, **{column: value}), column) == value
        for value in (limit.low - step.get(column, 1), limit.high + step.get(column, 1)):
            with pytest.raises(IntegrityError):
                await bot.guild_settings.update(guild, **{column: value})
    fresh = await bot.guild_settings.update(next(guilds), channel_id=1)  # a row: every other value the DB's DEFAULT
    assert {column: getattr(fresh, column) for column in columns} == {c: limit.default for c, limit in columns.items()}


def test_quill_story_masks_like_the_bot(tiny_bundle, monkeypatch, capsys):
    import cli
    from model.client import StoryEvent, StoryGenerator
    from model.generator import Story

    async def nothing(self, *args):
        return None

    async def stream(self, request):
        yield StoryEvent(text="Harry saw the n1gger ")
        yield StoryEvent(story=Story("Harry saw the n1gger ", 5, request, 0.1, "m", "h"))

    monkeypatch.setattr(StoryGenerator, "start", nothing)
    monkeypatch.setattr(StoryGenerator, "close", nothing)
    monkeypatch.setattr(StoryGenerator, "stream", stream)
    assert cli.main(["story", "H\u00e0rry", "--model", str(tiny_bundle), "--seed", "12"]) == 0
    out, err = capsys.readouterr()
    assert out == "Harry saw the \u25a0\u25a0\u25a0\u25a0\u25a0\u25a0 \n"
    assert "(wrote \u00e0\u2192a" in err and "(seed 12: --seed 12 tells this story again)" in err


async def test_the_cast_commands_and_the_cast_a_tale_keeps(bot):
    from model.generator import usable_cast
    from model.memory import default_cast

    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0)

    def moderator():
        return make_interaction(bot, guild_id=guild, manage_guild=True)

    member = await run(bot, "cast add", make_interaction(bot, guild_id=guild), entry="Ron Snape")
    assert "Manage Server" in ephemeral_text(member) and await bot.casts.entries(guild) == default_cast()
    assert "Hermione Granger" in ephemeral_text(await run(bot, "cast list", moderator()))  # a new server's cast
    assert ephemeral_text(await run(bot, "cast add", moderator(), entry="  Ron   Snape ")) == \
        "Added to the cast: **Ron Snape**."
    assert "in the cast already" in ephemeral_text(await run(bot, "cast add", moderator(), entry="ron snape"))
    assert "not allowed here" in ephemeral_text(await run(bot, "cast add", moderator(), entry="nigger"))
    assert "does not know" in ephemeral_text(await run(bot, "cast add", moderator(), entry="Ron \u2603"))
    assert await bot.casts.entries(guild) == default_cast() + ("Ron Snape",)

    story = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry looked", length=100, seed=2)
    view = story.edit_original_response.call_args.kwargs["view"]
    tale = await bot.gallery.get(guild, tale_id(view))
    assert tale.cast_entries == usable_cast(default_cast() + ("Ron Snape",), bot.generator.vocab)
    assert "Ron Snape" in tale.cast_entries and "Quidditch" not in tale.cast_entries  # the tiny model has no Q

    assert ephemeral_text(await run(bot, "cast remove", moderator(), entry="Ron Snape")) == \
        "Taken out of the cast: **Ron Snape**."
    assert "not in this server's cast" in ephemeral_text(await run(bot, "cast remove", moderator(), entry="Ron Snape"))
    again = make_interaction(bot, guild_id=guild)
    await press(view, "Again", again)
    retold = await bot.gallery.get(guild, tale_id(again.edit_original_response.call_args.kwargs["view"]))
    assert retold.cast_entries == tale.cast_entries  # Again tells the tale's world again
    await bot.word_lists.add(guild, "snape")  # a word blocked later leaves the entries that hold it out
    assert "The cast is the wizarding one again" in ephemeral_text(await run(bot, "cast reset", moderator()))
    assert await bot.casts.entries(guild) == default_cast()
    later = await run(bot, "story", make_interaction(bot, guild_id=guild), start="Harry looked", length=100)
    later_tale = await bot.gallery.get(guild, tale_id(later.edit_original_response.call_args.kwargs["view"]))
    assert "Severus Snape" not in later_tale.cast_entries and "Hermione Granger" in later_tale.cast_entries


@pytest.mark.slow
def test_console_keeps_a_cast(remembering_bundle, tmp_path):
    commands = "\n".join(["/cast add Luna Dark", "/cast list", "/cast remove Peeves", "/cast reset",
                          "/cast list", "quit"]) + "\n"
    out, stderr = run_console_with(commands, remembering_bundle, tmp_path)
    assert "Added to the cast: Luna Dark." in out and "Taken out of the cast: Peeves." in out
    first, second = [line for line in out.splitlines() if "This server's cast" in line]
    assert "Luna Dark" in first and "Peeves" in first  # before the remove
    assert "Luna Dark" not in second and "The cast is the wizarding one again" in out
    assert "Traceback" not in out + stderr


async def test_writing_together_keeps_the_cast_the_tale_was_opened_with(bot):
    from model.generator import StoryRequest

    guild = next(guilds)
    await bot.guild_settings.update(guild, cooldown_seconds=0, together_length=120)
    await bot.casts.add(guild, "Ron Snape")
    opener = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=1), start="Harry looked",
                       together=True, seed=4)
    opening = opener.channel.create_thread.return_value.send.call_args.kwargs
    tale = await bot.gallery.get(guild, tale_id_of(opening["view"]))
    assert "Ron Snape" in tale.cast_entries
    await bot.casts.reset(guild)  # the server's cast changes; the tale's does not
    _, reply = await bot.writer.add_line(make_interaction(bot, guild_id=guild, user_id=2), tale.id, "Ron ran.")
    settings = await bot.guild_settings.get(guild)
    context = bot.generator.vocab.normalisation.from_reading(tale.text)
    again = await bot.generator.generate(StoryRequest("\nRon ran.", 120, settings.temperature, reply.seed,
                                                      context=context, cast=tale.cast_entries))
    assert again.written == reply.text


# -- issue 19: metrics and health ----------------------------------------------------------------
async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple, float]:
    """Prometheus exposition text, parsed by prometheus_client's own parser (it fails on bad text)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_parse_and_move_and_health_tells_the_truth(bot, monkeypatch):
    from tools.local_postgres import free_port
    from bot.metrics import MetricsServer

    port = free_port()
    server = MetricsServer(bot.metrics, bot.health_problem, port, host="127.0.0.1")
    await server.start()
    try:
        before = samples((await scrape(port))[1])
        guild = next(guilds)
        await bot.guild_settings.update(guild, cooldown_seconds=600)
        user = make_interaction(bot, guild_id=guild, user_id=77)
        await run(bot, "story", user, start="Harry looked", length=200, seed=1)
        again = await run(bot, "story", make_interaction(bot, guild_id=guild, user_id=77), start="Harry", length=200)
        assert "another story in" in ephemeral_text(again)
        status, text = await scrape(port)
        after = samples(text)
        assert status == 200
        moved = {name: after.get((name, ()), 0) - before.get((name, ()), 0)
                 for name in ("quill_stories_started_total", "quill_stories_finished_total",
                              "quill_first_chunk_seconds_count", "quill_story_seconds_count")}
        assert moved == dict.fromkeys(moved, 1)
        assert after[("quill_stories_refused_total", (("reason", "cooldown"),))] >= 1
        for gauge in ("quill_queue_depth", "quill_batch_rows", "quill_generator_restarts"):
            assert (gauge, ()) in after
        assert await scrape(port, "/healthz") == (503, "not connected to Discord")  # no gateway in tests
        monkeypatch.setattr(type(bot), "is_ready", lambda self: True)
        assert await scrape(port, "/healthz") == (200, "ok")
        monkeypatch.setattr(bot.generator._ready, "is_set", lambda: False)
        assert await scrape(port, "/healthz") == (503, "the story generator is not ready")
    finally:
        await server.close()
