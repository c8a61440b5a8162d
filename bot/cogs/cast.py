"""/cast add, remove, list, reset: the names, places and things a server's stories draw on (the
tale's memory, model.memory). A new server has the wizarding cast of model/cast.txt. Replies are
seen only by the member who asked."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import MemberError, reply_privately, require_manage_server
from bot.writing import server_words
from model.generator import InvalidRequest, checked_cast_entry
from bot.limits import ENTRY_CHARS, MAX_CAST


class CastCog(commands.Cog):
    cast = app_commands.Group(name="cast", description="The names, places and things this server's stories draw on",
                              guild_only=True, default_permissions=discord.Permissions(manage_guild=True))

    def __init__(self, bot):
        self.bot = bot

    async def checked(self, guild_id: int, entry: str) -> str:
        """An entry as the cast holds it (normalised the model's way), or a refusal saying why."""
        words = await server_words(self.bot, guild_id)
        try:
            return checked_cast_entry(entry, self.bot.generator.vocab, words)
        except InvalidRequest as e:
            raise MemberError(f"That cast entry cannot be used: {e}.") from None

    @cast.command(name="add", description="Add a name, place or thing to this server's stories")
    @app_commands.describe(entry="Like Luna Lovegood, the Room of Requirement or Buckbeak")
    async def add(self, interaction: discord.Interaction, entry: app_commands.Range[str, 1, ENTRY_CHARS]):
        require_manage_server(interaction)
        entry = await self.checked(interaction.guild_id, entry)
        try:
            added = await self.bot.casts.add(interaction.guild_id, entry)
        except ValueError as e:
            raise MemberError(f"{e}.") from None
        await reply_privately(interaction, f"Added to the cast: **{discord.utils.escape_markdown(entry)}**." if added
                                  else f"**{discord.utils.escape_markdown(entry)}** is in the cast already.")

    @cast.command(name="remove", description="Take an entry out of this server's cast")
    @app_commands.describe(entry="An entry from /cast list")
    async def remove(self, interaction: discord.Interaction, entry: app_commands.Range[str, 1, ENTRY_CHARS]):
        require_manage_server(interaction)
        shown = discord.utils.escape_markdown(" ".join(entry.split()))
        removed = await self.bot.casts.remove(interaction.guild_id, " ".join(entry.split()))
        await reply_privately(interaction, f"Taken out of the cast: **{shown}**." if removed
                                  else f"**{shown}** is not in this server's cast (see /cast list).")

    @cast.command(name="list", description="This server's cast")
    async def list(self, interaction: discord.Interaction):
        require_manage_server(interaction)
        entries = await self.bot.casts.entries(interaction.guild_id)
        shown = ", ".join(discord.utils.escape_markdown(e) for e in entries) if entries else "nobody yet"
        await reply_privately(interaction, f"This server's cast ({len(entries)} of at most {MAX_CAST}): {shown}."[:2000])

    @cast.command(name="reset", description="Back to the wizarding cast a new server starts with")
    async def reset(self, interaction: discord.Interaction):
        require_manage_server(interaction)
        await self.bot.casts.reset(interaction.guild_id)
        await reply_privately(interaction, "The cast is the wizarding one again (see /cast list).")


async def setup(bot) -> None:
    await bot.add_cog(CastCog(bot))
