"""/filter add, remove, list: the words a server's moderators keep out of its tales, on top of the
shipped list (model/safety.py). Replies are seen only by the moderator."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import MemberError, reply_privately, require_manage_server
from bot.limits import MAX_WORD
from model.safety import clean_word


def checked(word: str) -> str:
    """A word as the lists hold it, or a refusal saying what is wrong with it."""
    try:
        return clean_word(word)
    except ValueError as e:
        raise MemberError(f"{e}.") from None


class FilterCog(commands.Cog):
    words = app_commands.Group(name="filter", description="Words this server keeps out of its tales",
                               guild_only=True, default_permissions=discord.Permissions(manage_guild=True))

    def __init__(self, bot):
        self.bot = bot

    @words.command(name="add", description="Keep a word out of this server's tales and starts")
    @app_commands.describe(word="One word, plain spelling (look-alike spellings are caught too)")
    async def add(self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD]):
        require_manage_server(interaction)
        word = checked(word)
        try:
            added = await self.bot.word_lists.add(interaction.guild_id, word)
        except ValueError as e:
            raise MemberError(f"{e}.") from None
        await reply_privately(interaction, f"Blocked on this server: ||{word}||." if added
                                  else f"||{word}|| was already blocked on this server.")

    @words.command(name="remove", description="Allow a word this server blocked")
    @app_commands.describe(word="A word from /filter list")
    async def remove(self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD]):
        require_manage_server(interaction)
        word = checked(word)  # as /filter add wrote it
        removed = await self.bot.word_lists.remove(interaction.guild_id, word)
        await reply_privately(interaction, f"Allowed again: ||{word}||." if removed
                                  else f"||{word}|| is not on this server's list (the shipped list cannot be changed).")

    @words.command(name="list", description="The words this server blocks")
    async def list(self, interaction: discord.Interaction):
        require_manage_server(interaction)
        words = await self.bot.word_lists.words(interaction.guild_id)
        shown = ", ".join(f"||{w}||" for w in words) if words else "none yet"
        await reply_privately(interaction, f"This server blocks: {shown}. A shipped list of slurs is always blocked too.")


async def setup(bot) -> None:
    await bot.add_cog(FilterCog(bot))
