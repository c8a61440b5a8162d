"""What every path that writes or shows a tale shares: a server's words with their filter ready,
and a member's name as tales keep it."""
from __future__ import annotations

import asyncio
from collections import Counter

import discord

from bot.errors import MemberError
from bot.limits import MEMBER_IN_FLIGHT, SERVER_SHARE
from model.generator import word_filter


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


def writers(tale, chapters) -> list[str]:
    """Who wrote a tale, in order of their first part: its opener, then every member who added a
    part (a chapter asked for with Continue, a line written together); never the bot's replies."""
    return list(dict.fromkeys([tale.author_name, *(c.author_name for c in chapters if c.kind != "reply")]))


def tale_so_far(tale, chapters) -> str:
    """A tale's text with every chapter after it, as stored: what the next part is written on from."""
    return tale.text + "".join(c.text for c in chapters)


def storing_a_tale(bot, interaction: discord.Interaction, start: str, request, together: bool = False):
    """What stores a story, once written, as a new tale of the member's (for StoryCog.write): the
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
