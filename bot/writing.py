"""The writing service: every story, chapter and reply is asked for, written, streamed, stored and
shown here (Writer, bot.writer), for /story, the buttons and the console, a tale written together
included (a thread where members take turns: their own line, then the bot's reply); and
what every path that writes a tale shares: a member's turn and share, a server's words with their
filter ready, a member's name as tales keep it."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import replace

import discord

from bot.db import Chapter, Tale, TaleFinished, tale_so_far, writers
from bot.errors import NO_MENTIONS, CooldownActive, MemberError, counted, moderates
from bot.limits import COOLDOWN_SECONDS, LINE, MEMBER_IN_FLIGHT, SERVER_SHARE, START, TOGETHER_MAX_PARTS
from bot.views import (EMBED_LIMIT, HIDDEN_NOTICE, chapter_embed, story_view, streaming_content, tale_embed,
                       together_view, turn_embed)
from bot.web import tale_link
from model.generator import GeneratorBusy, InvalidRequest, StoryRequest, usable_cast, word_filter

log = logging.getLogger("quill.writing")
BOT_AUTHOR = (0, "Quill")  # the author of the bot's replies in a tale written together
EDIT_INTERVAL = 1.0  # Discord rate-limits message edits; about one a second streams smoothly


class ShareUsed(MemberError):
    """A server or member already has its share of the storyteller."""


class Shares:
    """Stories being written, per server and per member. The storyteller's rows and queue are
    shared by every server on the process, and a moderator may set the cooldown to 0: so a server
    holds at most 1/SERVER_SHARE of them, and a member MEMBER_IN_FLIGHT, and one server's flood
    leaves the others their turn."""

    def __init__(self, capacity: int):
        self.server_most = max(1, capacity // SERVER_SHARE)
        self.servers: Counter[int] = Counter()
        self.members: Counter[tuple[int, int]] = Counter()

    def take(self, guild_id: int, user_id: int) -> None:
        if self.members[guild_id, user_id] >= MEMBER_IN_FLIGHT:
            raise ShareUsed(f"You already have {MEMBER_IN_FLIGHT} stories being written; wait for one to finish.")
        if self.servers[guild_id] >= self.server_most:
            raise ShareUsed(f"This server already has {self.server_most} stories being written, its share of "
                              f"the storyteller; try again when one is done.")
        self.servers[guild_id] += 1
        self.members[guild_id, user_id] += 1

    def give_back(self, guild_id: int, user_id: int) -> None:
        for counter, key in ((self.servers, guild_id), (self.members, (guild_id, user_id))):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]  # no server or member is remembered once it has nothing in flight


async def server_words(bot, guild_id: int) -> tuple[str, ...]:
    """A server's own blocked words, their filter compiled off the event loop (a list of 500 words
    takes tens of milliseconds to compile, once)."""
    words = await bot.word_lists.words(guild_id)
    await asyncio.to_thread(word_filter(words).prepare)
    return words


def storing_a_tale(bot, interaction: discord.Interaction, start: str, request, together: bool = False):
    """What stores a story, once written, as a new tale of the member's (for Writer.write): the
    start as they typed it, their name as tales keep it, the request's length and cast."""
    async def store(story):
        return await bot.gallery.add(
            guild_id=interaction.guild_id, channel_id=interaction.channel_id or 0, author_id=interaction.user.id,
            author_name=member_name(interaction.user, request.blocked_words), start=start, text=story.text,
            temperature=request.temperature, seed=story.seed, model=story.model, card_hash=story.card_hash,
            together=together, length=request.length, cast_entries=request.cast)
    return store


def member_name(member: discord.abc.User, blocked_words: tuple[str, ...]) -> str:
    """A member's display name as tales keep it: any blocked word masked, as a start's would be."""
    return word_filter(blocked_words).mask(member.display_name)


def thread_parent(interaction: discord.Interaction) -> int | None:
    """The channel a thread belongs to (a tale written together lives in one); None elsewhere."""
    channel = interaction.channel
    return channel.parent_id if isinstance(channel, discord.Thread) else None


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


class Writer:
    """Writes, streams and stores every story, chapter and reply: the cogs, the buttons and the
    console ask it (bot.writer). One request is prepared once (validated and normalised, before
    the reply is deferred), the member's turn and share taken, the story streamed into the reply,
    stored, then shown."""

    def __init__(self, bot):
        self.bot = bot
        self.cooldowns = Cooldowns()
        self.shares = Shares(bot.settings.max_batch + bot.settings.queue_size)
        self.edit_interval = EDIT_INTERVAL

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

    async def open_together(self, interaction: discord.Interaction, start: str, length: int | None = None,
                   seed: int | None = None) -> Tale:
        """Writing together: the opening, written from the start (`length` new characters, else the server's length for
        a turn), in a new thread where members take turns."""
        bot = self.bot
        check_start(start)
        settings = await bot.guild_settings.get(interaction.guild_id)
        request = await self.request(interaction, start, length or settings.together_length, seed, settings)

        tale = await self.write(interaction, request,
                                           storing_a_tale(bot, interaction, start, request, together=True))
        opening = tale_embed(tale)
        opening.set_footer(text=f"tale #{tale.id} · written together: press Add a line to take a turn")
        try:
            thread = await interaction.channel.create_thread(name=f"Quill: {start}"[:100],
                                                             type=discord.ChannelType.public_thread,
                                                             auto_archive_duration=1440)
            await thread.send(embed=opening, view=together_view(tale), allowed_mentions=NO_MENTIONS)
        except (discord.HTTPException, AttributeError):  # no thread here (permissions, a thread already)
            await interaction.edit_original_response(content=None, embed=opening, view=together_view(tale),
                                                     allowed_mentions=NO_MENTIONS)
            return tale
        await interaction.edit_original_response(
            content=f"We are writing \u201c{start}\u201d together in {thread.mention}: add a line there.",
            embed=None, view=None, allowed_mentions=NO_MENTIONS)
        await say_what_was_folded(interaction, request)
        return tale

    async def add_line(self, interaction: discord.Interaction, tale_id: int, line: str) -> tuple[Chapter, Chapter]:
        """A member's own line, checked like a start, then the bot's reply written on from it; both
        stored together, in order, each with its author."""
        bot, user, guild_id = self.bot, interaction.user, interaction.guild_id
        tale = await bot.gallery.get(guild_id, tale_id)
        if not tale.together:
            raise MemberError(f"Tale #{tale.id} is not written together: Continue writes its next chapter.")
        if tale.hidden:
            raise MemberError(HIDDEN_NOTICE.format(id=tale.id))
        if tale.finished:
            raise TaleFinished(tale.id)
        if not line.strip() or len(line) > LINE.high:
            raise InvalidRequest(f"a line is {LINE} characters")
        settings = await bot.guild_settings.get(guild_id)
        chapters = await bot.gallery.chapters(guild_id, tale.id)
        # The line is the request's start, checked and normalised once; its leading break makes it a
        # paragraph of its own. A line is a turn in the round, not a story asked for, so it takes no
        # cooldown: members answering each other are not told to wait (the shares still hold).
        request = await self.continuation(interaction, tale_so_far(tale, chapters),
                                                     settings.together_length, settings, tale.cast_entries,
                                                     start="\n" + line.strip(), turn=False)

        async def store(story) -> list[Chapter]:
            line = story.text[:story.begins]
            return await bot.gallery.add_chapters(
                guild_id, tale.id, [("line", user.id, member_name(user, request.blocked_words), line, 0),
                                    ("reply", *BOT_AUTHOR, story.written, story.seed)],
                limit=TOGETHER_MAX_PARTS)

        parts = await self.write(interaction, request, store, turn=False)
        await interaction.edit_original_response(content=None, embed=turn_embed(tale, *parts),
                                                 view=together_view(tale), allowed_mentions=NO_MENTIONS)
        await say_what_was_folded(interaction, request)
        return parts[0], parts[1]

    async def finish_together(self, interaction: discord.Interaction, tale: Tale) -> Tale:
        if interaction.user.id != tale.author_id and not moderates(interaction):
            raise MemberError("Only the member who opened this tale, or members with Manage Messages, can finish it.")
        tale = await self.bot.gallery.finish(tale.guild_id, tale.id)
        chapters = await self.bot.gallery.chapters(tale.guild_id, tale.id)
        whole = tale_so_far(tale, chapters).strip()
        embed = tale_embed(tale)
        embed.description = whole if len(whole) <= EMBED_LIMIT else "\u2026" + whole[-(EMBED_LIMIT - 1):]
        embed.add_field(name="Written together by", value=", ".join(writers(tale, chapters))[:1024])
        await interaction.response.send_message(
            f"The round is finished ({counted(tale.chapters, 'part')}; `/tale export id:{tale.id}` gives it whole). "
            "Its opener can save it to the gallery:", embed=embed, view=story_view(tale), allowed_mentions=NO_MENTIONS)
        return tale

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
