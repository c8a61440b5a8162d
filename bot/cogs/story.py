"""/story: defer, stream the tale into the reply, finish with an embed and its buttons."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import Chapter, Tale
from bot.errors import NO_MENTIONS, CooldownActive, MemberError, answer_error
from bot.limits import COOLDOWN_SECONDS, START, STORY_LENGTH
from bot.web import tale_link
from bot.writing import Shares, ShareUsed, member_name, server_words, storing_a_tale, tale_so_far
from model.generator import MAX_SEED, GeneratorBusy, InvalidRequest, StoryRequest, usable_cast, word_filter

log = logging.getLogger("quill.story")
EDIT_INTERVAL = 1.0  # Discord rate-limits message edits; about one a second streams smoothly
CONTENT_LIMIT = 2000
EMBED_LIMIT = 4096
WRITING = " ✍️"  # the pen shown while the tale is being written


def thread_parent(interaction: discord.Interaction) -> int | None:
    """The channel a thread belongs to (a tale written together lives in one); None elsewhere."""
    channel = interaction.channel
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def streaming_content(text: str, position: int = 0) -> str:
    """A streamed edit: the tale so far (its end, past Discord's limit) and the pen; never over 2,000."""
    if position:
        return f"⏳ Waiting for the storyteller: you are number {position} in line."
    room = CONTENT_LIMIT - len(WRITING)
    if len(text) > room:
        text = "…" + text[-(room - 1):]
    return text + WRITING


def tale_embed(tale: Tale) -> discord.Embed:
    embed = discord.Embed(title=tale.start[:256], description=tale.text[:EMBED_LIMIT], colour=0x7F0909)
    chapters = f" · {tale.chapters} chapters" if tale.chapters > 1 else ""
    embed.set_footer(text=f"temperature {tale.temperature:g} · seed {tale.seed} · {tale.model} · tale #{tale.id}"
                          f"{chapters} · 👍 {tale.votes}")
    return embed


def chapter_embed(tale: Tale, chapter: Chapter) -> discord.Embed:
    embed = discord.Embed(title=f"{tale.start[:200]} · chapter {chapter.number}",
                          description=chapter.text.strip()[:EMBED_LIMIT], colour=0x7F0909)
    embed.set_footer(text=f"chapter {chapter.number} of {tale.chapters} · asked by {chapter.author_name} · "
                          f"seed {chapter.seed} · tale #{tale.id} · 👍 {tale.votes}")
    return embed


def continuation_start(so_far: str, most: int) -> str:
    """The end of the tale so far (model text) that primes the next chapter: at most `most`
    characters (more than the model usefully remembers), from a paragraph or sentence start."""
    if len(so_far) <= most:
        return so_far
    tail = so_far[-most:]
    for mark in ("\n", ". ", "! ", "? "):
        at = tail.find(mark)
        if 0 <= at < most // 2:
            return tail[at + len(mark):]
    return tail[tail.find(" ") + 1:]


def check_start(start) -> None:
    """A story's start as members type it: text of START characters."""
    if not isinstance(start, str):
        raise InvalidRequest(f"the start text must be text, not {type(start).__name__}")
    if not (START.low <= len(start.strip()) and len(start) <= START.high):
        raise InvalidRequest(f"the start text must be {START} characters")


@contextlib.contextmanager
def counting_refusals(metrics):
    """A request refused before any writing is counted by why (/metrics)."""
    try:
        yield
    except CooldownActive:
        metrics.refused.labels("cooldown").inc()
        raise
    except InvalidRequest:
        metrics.refused.labels("invalid").inc()
        raise
    except ShareUsed:
        metrics.refused.labels("share").inc()
        raise
    except MemberError:  # stories are written in another channel
        metrics.refused.labels("channel").inc()
        raise


async def say_what_was_folded(interaction: discord.Interaction, request: StoryRequest) -> None:
    """Tell the member, once the tale is shown, which of their letters the model wrote plainer (an
    ephemeral followup after the reply, never before it: a first followup may take the deferred
    reply's place)."""
    if request.folded:
        await interaction.followup.send(f"Quill wrote {', '.join(request.folded)} in your words: its alphabet "
                                        "has no such letters.", ephemeral=True, allowed_mentions=NO_MENTIONS)


PRUNE_AT = 10_000  # remembered turns before the cooldowns forget those that are over


class Cooldowns:
    """One story per member per `seconds`, per server; a story that fails gives the turn back."""

    def __init__(self):
        self.last: dict[tuple[int, int], float] = {}

    def take(self, guild_id: int, user_id: int, seconds: int) -> None:
        now = time.monotonic()
        wait = self.last.get((guild_id, user_id), -1e9) + seconds - now
        if wait > 0:
            raise CooldownActive(wait)
        if len(self.last) >= PRUNE_AT:  # turns older than the longest cooldown can matter no more
            self.last = {key: at for key, at in self.last.items() if now - at < COOLDOWN_SECONDS.high}
        self.last[(guild_id, user_id)] = now

    def give_back(self, guild_id: int, user_id: int) -> None:
        self.last.pop((guild_id, user_id), None)


class TaleButton:
    """A button whose custom_id carries the tale id, so it keeps working after a restart and
    never times out (discord.py rebuilds it from the id: a DynamicItem)."""

    kind = ""
    needs_visible = True  # a tale hidden after reports takes no votes, saves or retellings

    def __init__(self, tale_id: int, label: str, style=discord.ButtonStyle.secondary, disabled: bool = False):
        super().__init__(discord.ui.Button(label=label, style=style, disabled=disabled,
                                           custom_id=f"quill:{self.kind}:{tale_id}"))
        self.tale_id = tale_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            tale = await interaction.client.gallery.get(interaction.guild_id, self.tale_id)
            if tale.hidden and self.needs_visible:
                raise MemberError(HIDDEN_NOTICE.format(id=tale.id))
            await self.press(interaction, tale)
        except Exception as error:  # a rebuilt item has no view of ours to route errors
            await answer_error(interaction, error)


class SaveButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:save:(?P<id>[0-9]+)"):
    kind = "save"

    def __init__(self, tale_id: int, saved: bool = False):
        super().__init__(tale_id, "In the gallery" if saved else "Save to gallery", discord.ButtonStyle.primary,
                         disabled=bool(saved))

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        if interaction.user.id != tale.author_id:
            raise MemberError("Only the tale's author can save it to the gallery.")
        tale = await interaction.client.gallery.save_to_gallery(tale.guild_id, tale.id)
        await interaction.response.edit_message(view=story_view(tale, await tale_link(interaction.client, tale)),
                                                allowed_mentions=NO_MENTIONS)
        await interaction.followup.send(f"Saved: tale #{tale.id} is in this server's gallery now.", ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)


class VoteButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:vote:(?P<id>[0-9]+)"):
    kind = "vote"

    def __init__(self, tale_id: int, votes: int = 0):
        super().__init__(tale_id, f"👍 {votes}")

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        tale, _ = await interaction.client.gallery.toggle_vote(tale.guild_id, tale.id, interaction.user.id)
        await interaction.response.edit_message(embed=tale_embed(tale),
                                                view=story_view(tale, await tale_link(interaction.client, tale)),
                                                allowed_mentions=NO_MENTIONS)


class AgainButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:again:(?P<id>[0-9]+)"):
    kind = "again"

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "Again")

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        # A new seed, with the tale's own length and cast.
        await interaction.client.writer.tell(interaction, tale.start, tale.length or None, cast=tale.cast_entries)


class ReportButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button],
                   template=r"quill:report:(?P<id>[0-9]+)"):
    kind = "report"
    needs_visible = False  # a hidden tale can still be reported (and says so)

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "\U0001f6a9 Report", discord.ButtonStyle.danger)

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        bot = interaction.client
        settings = await bot.guild_settings.get(tale.guild_id)
        tale, new = await bot.gallery.report(tale.guild_id, tale.id, interaction.user.id, settings.report_threshold)
        if tale.hidden:  # the message in the channel stops showing it too
            await interaction.response.edit_message(content=HIDDEN_NOTICE.format(id=tale.id), embed=None, view=None,
                                                    allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.defer()
        await interaction.followup.send("Thank you: the moderators will look at it." if new
                                        else "You have reported this tale already.", ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)


class ContinueButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button],
                     template=r"quill:continue:(?P<id>[0-9]+)"):
    kind = "continue"

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "Continue", discord.ButtonStyle.success)

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        await interaction.client.writer.continue_tale(interaction, tale)


HIDDEN_NOTICE = "\U0001f6a9 Tale #{id} was reported and is hidden until a moderator looks at it."
TALE_BUTTONS = (SaveButton, VoteButton, AgainButton, ContinueButton, ReportButton)


def tale_buttons(tale: Tale, link: str | None = None) -> list[discord.ui.Item]:
    """The tale's buttons, and with its page's `link` (bot/web.py tale_link) a link button: Discord
    opens it, so it has no custom_id and never reaches the bot."""
    buttons = [SaveButton(tale.id, tale.in_gallery), VoteButton(tale.id, tale.votes), AgainButton(tale.id),
               ContinueButton(tale.id), ReportButton(tale.id)]
    return buttons + [discord.ui.Button(label="Read on the web", url=link)] if link else buttons


def story_view(tale: Tale, link: str | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in tale_buttons(tale, link):
        view.add_item(item)
    return view


class StoryCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.cooldowns = Cooldowns()
        self.shares = Shares(bot.settings.max_batch + bot.settings.queue_size)
        self.edit_interval = EDIT_INTERVAL

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*TALE_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*TALE_BUTTONS)

    @app_commands.command(name="story", description="Write a tale that begins with your words")
    @app_commands.describe(start=f"How the tale begins ({START} characters)",
                           length=f"New characters after your start ({STORY_LENGTH}; default: this server's setting)",
                           seed="Same seed and settings give the same tale",
                           together="Write it together: a thread where members take turns adding lines")
    @app_commands.guild_only()
    async def story(self, interaction: discord.Interaction, start: app_commands.Range[str, START.low, START.high],
                    length: app_commands.Range[int, STORY_LENGTH.low, STORY_LENGTH.high] | None = None,
                    seed: app_commands.Range[int, 0, MAX_SEED] | None = None, together: bool = False):
        if together:
            await self.bot.together.open(interaction, start, length, seed)
        else:
            await self.tell(interaction, start, length, seed)

    async def request(self, interaction: discord.Interaction, start: str, length: int, seed: int | None,
                      settings, context: str = "", cast: tuple[str, ...] | None = None,
                      turn: bool = True) -> StoryRequest:
        """A validated request with this server's temperature and words, and its cast unless a tale's
        own is given; the member's turn (the cooldown) is taken unless `turn` is False."""
        bot = self.bot
        with counting_refusals(bot.metrics):
            if settings.channel_id and settings.channel_id not in (interaction.channel_id,
                                                                   thread_parent(interaction)):
                raise MemberError(f"I write stories in <#{settings.channel_id}> on this server.")
            words = await server_words(bot, interaction.guild_id)
            if cast is None:
                cast = await bot.casts.entries(interaction.guild_id)
            request = StoryRequest(start, length, settings.temperature, seed, blocked_words=words, context=context,
                                   cast=usable_cast(cast, bot.generator.vocab, words))
            request = bot.generator.prepare(request)  # fails before deferring
            if turn:
                self.cooldowns.take(interaction.guild_id, interaction.user.id, settings.cooldown_seconds)
        return request

    async def tell(self, interaction: discord.Interaction, start: str, length: int | None = None,
                   seed: int | None = None, cast: tuple[str, ...] | None = None) -> Tale:
        """A story from `start`, with the server's cast unless `cast` is given (Again: the tale's)."""
        bot, guild_id = self.bot, interaction.guild_id
        settings = await bot.guild_settings.get(guild_id)
        with counting_refusals(bot.metrics):
            check_start(start)
        request = await self.request(interaction, start, length or settings.story_length, seed, settings, cast=cast)

        tale = await self.write(interaction, request, storing_a_tale(bot, interaction, start, request))
        await self._show(interaction, tale)
        await say_what_was_folded(interaction, request)
        return tale

    async def continue_tale(self, interaction: discord.Interaction, tale: Tale) -> Chapter:
        """The next chapter: primed with the end of the tale so far, written and streamed like a
        story, stored as soon as it is done (with its seed), then shown with the tale's buttons."""
        bot, guild_id, user = self.bot, interaction.guild_id, interaction.user
        settings = await bot.guild_settings.get(guild_id)
        if tale.together and not tale.finished:
            raise MemberError("This tale is being written together: add a line in its thread.")
        if tale.chapters >= settings.max_chapters:
            raise MemberError(f"This tale has all the chapters it may have ({settings.max_chapters}; see /settings).")
        chapters = await bot.gallery.chapters(guild_id, tale.id)
        request = await self.continuation(interaction, tale_so_far(tale, chapters),
                                          settings.story_length, settings, cast=tale.cast_entries)

        async def store(story) -> Chapter:
            [chapter] = await bot.gallery.add_chapters(
                guild_id, tale.id, [("chapter", user.id, member_name(user, request.blocked_words), story.written, story.seed)],
                limit=settings.max_chapters)
            return chapter

        chapter = await self.write(interaction, request, store)
        tale = await bot.gallery.get(guild_id, tale.id)
        await self._show(interaction, tale, chapter_embed(tale, chapter))
        return chapter

    async def continuation(self, interaction: discord.Interaction, so_far: str, new: int, settings,
                           cast: tuple[str, ...], start: str = "", turn: bool = True) -> StoryRequest:
        """A request that writes `new` characters on from the end of `so_far` (a tale as stored, so
        model text again without normalising it twice), after a member's `start` if any, with the
        tale's own cast."""
        generator = self.bot.generator
        tale = generator.vocab.normalisation.from_reading(so_far)
        context = continuation_start(tale, generator.config.max_prompt)
        return await self.request(interaction, start, new, None, settings, context, cast, turn)

    async def write(self, interaction: discord.Interaction, request: StoryRequest, store, turn: bool = True):
        """Defer, stream the story, and store it (`await store(story)`) as soon as it is done; a
        failure gives the member's turn back. Stored first, then shown: no display error can cost a
        finished tale. The generator never writes a blocked word; masking here is the last line of
        defence (letter for letter, so the story's `begins` still holds). `turn`: whether the request
        took the member's turn, to give back."""
        metrics = self.bot.metrics
        guild_id, user_id = interaction.guild_id, interaction.user.id
        try:
            with counting_refusals(metrics):
                self.shares.take(guild_id, user_id)  # before deferring: a refusal is quick and private
        except ShareUsed:
            if turn:
                self.cooldowns.give_back(guild_id, user_id)
            raise
        metrics.started.inc()
        began = time.monotonic()
        try:
            await interaction.response.defer(thinking=True)
            story = await self._stream(interaction, request, began)
            stored = await store(replace(story, text=word_filter(request.blocked_words).mask(story.text)))
        except BaseException as error:
            if turn:
                self.cooldowns.give_back(guild_id, user_id)
            if isinstance(error, GeneratorBusy):
                metrics.refused.labels("busy").inc()
            else:
                metrics.failed.inc()
            raise
        finally:
            self.shares.give_back(guild_id, user_id)
        metrics.finished.inc()
        metrics.story_seconds.observe(time.monotonic() - began)
        metrics.rewinds.inc(story.filtered)
        return stored

    async def _show(self, interaction: discord.Interaction, tale: Tale, embed: discord.Embed | None = None) -> None:
        try:
            await interaction.edit_original_response(content=None, embed=embed or tale_embed(tale),
                                                     view=story_view(tale, await tale_link(self.bot, tale)),
                                                     allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:  # the tale is safe; point the member to it
            log.warning("could not show tale #%s (guild %s): %s", tale.id, tale.guild_id, error)
            await interaction.followup.send(f"Your tale is saved as #{tale.id}: `/tale show id:{tale.id}` shows it.",
                                            ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _stream(self, interaction: discord.Interaction, request: StoryRequest, began: float):
        """Read the story as fast as it is written; a separate loop edits the reply with everything
        ready at most once per edit interval, so slow edits never hold the tale back. An edit once
        sent is never abandoned: the message's next edit (the final one included) waits for it,
        and so for any 429's retry_after that discord.py is sitting out inside it."""
        progress = {"text": "", "position": 0}
        changed = asyncio.Event()
        words = word_filter(request.blocked_words)
        sending: asyncio.Future | None = None

        async def edit(content: str) -> None:
            try:
                await interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as error:  # a lost edit is only a missed frame
                log.warning("streamed edit failed (guild %s): %s", interaction.guild_id, error)

        async def edit_now_and_then() -> None:
            nonlocal sending
            while True:
                await changed.wait()
                changed.clear()
                sending = asyncio.ensure_future(
                    edit(streaming_content(words.mask(progress["text"].lstrip()), progress["position"])))
                await asyncio.shield(sending)  # stopping this loop does not stop the edit
                await asyncio.sleep(self.edit_interval)

        editor = asyncio.create_task(edit_now_and_then())
        try:
            async for event in self.bot.generator.stream(request):
                if event.story is not None:
                    return event.story
                if event.text and not progress["text"]:
                    self.bot.metrics.first_chunk.observe(time.monotonic() - began)
                progress["position"] = event.position
                progress["text"] += event.text
                changed.set()
        finally:
            editor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await editor
            if sending is not None:
                await sending


async def setup(bot) -> None:
    await bot.add_cog(StoryCog(bot))
