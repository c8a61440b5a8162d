"""What every path that writes or shows a tale shares: a server's words with their filter ready,
and a member's name as tales keep it."""
from __future__ import annotations

import asyncio

import discord

from model.generator import word_filter


async def server_words(bot, guild_id: int) -> tuple[str, ...]:
    """A server's own blocked words, their filter compiled off the event loop (a list of 500 words
    takes tens of milliseconds to compile, once)."""
    words = await bot.word_lists.words(guild_id)
    await asyncio.to_thread(word_filter(words).prepare)
    return words


def member_name(member: discord.abc.User, blocked_words: tuple[str, ...]) -> str:
    """A member's display name as tales keep it: any blocked word masked, as a start's would be."""
    return word_filter(blocked_words).mask(member.display_name)
