"""The Discord contract: the real discord.py client and QuillBot against a local fake Discord
(tests/fake_discord.py) that checks every request against Discord's documented limits."""
import asyncio

import discord
import pytest
import pytest_asyncio

from tests.fake_discord import MANAGE_GUILD, FakeDiscord, answered, callback

HOGWARTS, DURMSTRANG = 1, 2
PUBLIC_URL = "https://tales.example.org"  # where the web gallery is linked (served elsewhere: tests/test_web.py)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def discord_app(tiny_bundle, tmp_path_factory):
    from bot.app import QuillBot
    from bot.settings import Settings

    fake = FakeDiscord()
    fake.guilds = {HOGWARTS: "Hogwarts", DURMSTRANG: "Durmstrang"}
    base = await fake.start() + "/api/v10"
    patch = pytest.MonkeyPatch()
    patch.setattr(discord.http.Route, "BASE", base)
    patch.setattr(discord.webhook.async_.Route, "BASE", base)
    bot = QuillBot(Settings(discord_token="fake", database=tmp_path_factory.mktemp("db") / "quill.db",
                            model=tiny_bundle, story_timeout=60, public_url=PUBLIC_URL))
    runner = asyncio.create_task(bot.start("fake"))
    await asyncio.wait_for(bot.wait_until_ready(), 60)
    for guild in fake.guilds:
        await bot.guild_settings.update(guild, cooldown_seconds=0)
    yield fake, bot
    await bot.close()
    await asyncio.wait_for(runner, 30)
    await fake.close()
    patch.undo()


def edits(fake, token) -> list[dict]:
    return [payload for kind, t, payload in fake.requests if kind == "edit" and t == token]


async def test_commands_are_synced_once_with_valid_payloads(discord_app):
    fake, bot = discord_app
    assert fake.identify["shard"] == [0, 1]  # it shards itself, as many shards as Discord recommends (1 here)
    names = {c["name"] for c in fake.commands}
    assert {"story", "temperature", "settings", "gallery", "tale", "filter"} <= names
    assert fake.violations == []


@pytest.mark.slow
async def test_a_long_story_under_slow_edits_streams_and_finishes(discord_app):
    fake, bot = discord_app
    fake.edit_delay = 1.0  # Discord under load
    try:
        start = ("Harry looked at the old castle and the dark forest and the great hall " * 3)[:200].strip()
        token = await fake.interact(HOGWARTS, 11, command="story", options={"start": start, "length": 1900})
        final = await answered(fake, token, timeout=60)
    finally:
        fake.edit_delay = 0.0
    assert 5 in [p["type"] for p in fake.callbacks.values()]  # deferred ("thinking") within the deadline
    embed = final["embeds"][0]
    # a story that meets its hard limit mid-sentence ends at its last sentence end past half its length
    assert embed["description"].startswith(start[:50]) and len(embed["description"]) >= len(start) + 1900 * 0.45
    assert len(edits(fake, token)) <= 6  # not one slow edit per chunk (which would take a second each)
    assert fake.violations == []


@pytest.mark.slow
async def test_429_and_500_mid_story_lose_nothing(discord_app):
    fake, bot = discord_app
    bot.writer.edit_interval = 0.0  # edit as often as chunks come: the limit is hit
    fake.fail_next.update({"429": 1, "500": 1})
    try:
        token = await fake.interact(HOGWARTS, 12, command="story", options={"start": "Harry", "length": 1500})
        final = await answered(fake, token, timeout=60)
    finally:
        bot.writer.edit_interval = 1.0
    assert final["embeds"][0]["description"].startswith("Harry")
    assert fake.rate_limited >= 1 and fake.fail_next == {"429": 0, "500": 0}
    tale_id = int(final["embeds"][0]["footer"]["text"].split("tale #")[1].split()[0])
    assert (await bot.gallery.get(HOGWARTS, tale_id)).text.startswith("Harry")
    assert fake.violations == []


@pytest.mark.slow
async def test_a_429_holds_every_later_edit_of_that_message(discord_app):
    """A streamed edit is told to wait 1.5 s; the story is done long before that, and its final
    edit still waits: one writer per message."""
    fake, bot = discord_app
    bot.writer.edit_interval = 0.0
    fake.fail_next["429"], fake.retry_after = 1, 1.5
    try:
        token = await fake.interact(HOGWARTS, 18, command="story", options={"start": "Harry", "length": 300})
        final = await answered(fake, token, timeout=60)
    finally:
        bot.writer.edit_interval, fake.retry_after = 1.0, 0.3
    assert final["embeds"][0]["description"].startswith("Harry")
    assert fake.limited_until[token] and fake.fail_next["429"] == 0
    assert fake.violations == []


@pytest.mark.slow
async def test_a_gateway_drop_mid_story_resumes(discord_app):
    fake, bot = discord_app
    fake.edit_delay = 0.3
    try:
        token = await fake.interact(HOGWARTS, 13, command="story", options={"start": "Ron", "length": 1900})
        await fake.drop_gateway()
        await asyncio.wait_for(fake.resumed.wait(), 30)
        final = await answered(fake, token, timeout=60)
    finally:
        fake.edit_delay = 0.0
    assert final["embeds"][0]["description"].startswith("Ron")
    token = await fake.interact(HOGWARTS, 13, command="story", options={"start": "Hermione", "length": 200})
    assert (await answered(fake, token))["embeds"][0]["description"].startswith("Hermione")
    assert fake.violations == []


async def test_buttons_save_vote_and_again(discord_app):
    fake, bot = discord_app
    token = await fake.interact(HOGWARTS, 14, command="story", options={"start": "Snape", "length": 300})
    message = await answered(fake, token)
    buttons = {b["label"]: b for row in message["components"] for b in row["components"]}
    assert {"Save to gallery", "👍 0", "Again", "\U0001f6a9 Report"} <= set(buttons)
    assert all(isinstance(b.get("disabled", False), bool) for b in buttons.values())
    press = await fake.interact(HOGWARTS, 14, custom_id=buttons["Save to gallery"]["custom_id"], message=message)
    await answered(fake, press)
    saved = fake.callbacks[max(fake.callbacks)]
    assert saved["type"] == 7
    save = next(b for row in saved["data"]["components"] for b in row["components"] if b["label"] == "In the gallery")
    assert save["disabled"] is True
    vote = await fake.interact(HOGWARTS, 15, custom_id=buttons["👍 0"]["custom_id"], message=message)
    assert (await callback(fake, vote))["data"]["embeds"][0]["footer"]["text"].endswith("👍 1")
    again = await fake.interact(HOGWARTS, 15, custom_id=buttons["Again"]["custom_id"], message=message)
    assert (await answered(fake, again))["embeds"][0]["description"].startswith("Snape")
    onward = await fake.interact(HOGWARTS, 16, custom_id=buttons["Continue"]["custom_id"], message=message)
    chapter = (await answered(fake, onward))["embeds"][0]
    assert chapter["title"] == "Snape · chapter 2" and "asked by member16" in chapter["footer"]["text"]
    assert fake.violations == []


async def test_temperature_needs_manage_server(discord_app):
    fake, bot = discord_app
    token = await fake.interact(DURMSTRANG, 16, command="temperature", options={"value": 0.9})
    refused = (await callback(fake, token))["data"]
    assert "Manage Server" in refused["content"] and refused["flags"] & 64  # private
    token = await fake.interact(DURMSTRANG, 16, command="temperature", options={"value": 0.9},
                                permissions=MANAGE_GUILD)
    assert "set to **0.9**" in (await callback(fake, token))["data"]["content"]
    assert (await bot.guild_settings.get(DURMSTRANG)).temperature == 0.9
    assert (await bot.guild_settings.get(HOGWARTS)).temperature == 0.5
    assert fake.violations == []


async def test_the_gallery_of_one_server_is_not_anothers(discord_app):
    fake, bot = discord_app
    token = await fake.interact(DURMSTRANG, 17, command="gallery", options={})
    shown = (await callback(fake, token))["data"]["embeds"][0]
    assert "No tales saved yet" in shown["description"]  # Hogwarts saved one; Durmstrang sees none
    token = await fake.interact(HOGWARTS, 17, command="gallery", options={})
    shown = (await callback(fake, token))["data"]["embeds"][0]
    assert shown["fields"] and shown["fields"][0]["name"].startswith("#")
    assert fake.violations == []


def test_the_fake_refuses_buttons_discord_would():
    fake = FakeDiscord()
    link = {"type": 2, "style": 5, "label": "Read on the web", "url": f"{PUBLIC_URL}/g/abc/1"}
    for button, fine in [(link, True), ({**link, "custom_id": "quill:web:1"}, False),
                         ({**link, "url": "javascript:alert(1)"}, False), ({**link, "url": PUBLIC_URL + "/" * 500}, False),
                         ({"type": 2, "style": 1, "label": "Save", "custom_id": "quill:save:1"}, True),
                         ({"type": 2, "style": 1, "label": "Save"}, False)]:
        message = {"components": [{"type": 1, "components": [button]}]}
        assert fake.check_message(message, "test") is fine, button


def buttons_of(message: dict) -> list[dict]:
    return [b for row in message.get("components") or [] for b in row["components"]]


async def test_a_published_server_links_its_saved_tales_to_the_web(discord_app):
    fake, bot = discord_app
    token = await fake.interact(DURMSTRANG, 19, command="settings", options={"web": "on"}, permissions=MANAGE_GUILD)
    answer = (await callback(fake, token))["data"]["content"]
    slug = (await bot.web_galleries.get(DURMSTRANG)).slug
    assert f"on the web at {PUBLIC_URL}/g/{slug}/" in answer
    token = await fake.interact(DURMSTRANG, 19, command="story", options={"start": "Hermione", "length": 200})
    message = await answered(fake, token)
    assert all("url" not in b for b in buttons_of(message))  # not saved yet: its page would be a 404
    tale_id = int(message["embeds"][0]["footer"]["text"].split("tale #")[1].split()[0])
    save = next(b for b in buttons_of(message) if b["label"] == "Save to gallery")
    press = await fake.interact(DURMSTRANG, 19, custom_id=save["custom_id"], message=message)
    [link] = [b for b in buttons_of((await callback(fake, press))["data"]) if "url" in b]
    assert link["url"] == f"{PUBLIC_URL}/g/{slug}/{tale_id}" and link["style"] == 5 and "custom_id" not in link
    token = await fake.interact(DURMSTRANG, 19, command="tale show", options={"id": tale_id})
    assert [b["url"] for b in buttons_of((await callback(fake, token))["data"]) if "url" in b] == [link["url"]]
    token = await fake.interact(DURMSTRANG, 19, command="settings", options={"web": "off"}, permissions=MANAGE_GUILD)
    assert "not on the web" in (await callback(fake, token))["data"]["content"]
    token = await fake.interact(DURMSTRANG, 19, command="tale show", options={"id": tale_id})
    assert buttons_of(shown := (await callback(fake, token))["data"]) and all("url" not in b for b in buttons_of(shown))
    assert fake.violations == []
