"""/story: a tale from a member's start (bot.writer writes it), or one written together."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.limits import START, STORY_LENGTH
from model.generator import MAX_SEED


class StoryCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

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
            await self.bot.writer.open_together(interaction, start, length, seed)
        else:
            await self.bot.writer.tell(interaction, start, length, seed)


async def setup(bot) -> None:
    await bot.add_cog(StoryCog(bot))
