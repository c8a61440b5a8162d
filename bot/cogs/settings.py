"""/temperature and /settings: per-server settings; changing them needs Manage Server."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import GuildSettings
from bot.errors import NO_MENTIONS


def describe(s: GuildSettings) -> str:
    channel = f"<#{s.channel_id}>" if s.channel_id else "any channel"
    return (f"Temperature: **{s.temperature:g}** · story length: **{s.story_length}** characters · "
            f"cooldown: **{s.cooldown_seconds} s** per member · stories in: {channel} · "
            f"a tale is hidden after **{s.report_threshold}** report(s) · at most **{s.max_chapters}** chapters · "
            f"**{s.together_length}** characters after each line written together")


class SettingsCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    @app_commands.command(name="temperature", description="Show or set how adventurous the storyteller is")
    @app_commands.describe(value="0.1 (safe, repetitive) to 2.0 (wild); the default is 0.5")
    @app_commands.guild_only()
    async def temperature(self, interaction: discord.Interaction,
                          value: app_commands.Range[float, 0.1, 2.0] | None = None):
        store = self.bot.guild_settings
        if value is None:
            current = await store.get(interaction.guild_id)
            message = f"This server's temperature is **{current.temperature:g}**."
        else:
            # Checked here, not only by Discord's default permissions, which admins can override.
            if not interaction.permissions.manage_guild:
                raise app_commands.MissingPermissions(["manage_guild"])
            updated = await store.update(interaction.guild_id, temperature=round(float(value), 2))
            message = f"Temperature set to **{updated.temperature:g}**."
        await interaction.response.send_message(message, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="settings", description="Show or change this server's story settings")
    @app_commands.describe(length="Default story length in characters (100-1900)",
                           cooldown="Seconds a member waits between stories (0-3600)",
                           channel="The only channel the bot writes stories in",
                           any_channel="Allow stories in every channel again",
                           report_threshold="Reports from this many members hide a tale (1-100)",
                           max_chapters="Chapters a tale may have, Continue included (1-50)",
                           together_length="Characters the bot writes after each member's line (100-1000)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def settings(self, interaction: discord.Interaction,
                       length: app_commands.Range[int, 100, 1900] | None = None,
                       cooldown: app_commands.Range[int, 0, 3600] | None = None,
                       channel: discord.TextChannel | None = None, any_channel: bool = False,
                       report_threshold: app_commands.Range[int, 1, 100] | None = None,
                       max_chapters: app_commands.Range[int, 1, 50] | None = None,
                       together_length: app_commands.Range[int, 100, 1000] | None = None):
        changes = {name: int(value) for name, value in (("report_threshold", report_threshold),
                                                         ("max_chapters", max_chapters),
                                                         ("together_length", together_length)) if value is not None}
        if length is not None:
            changes["story_length"] = int(length)
        if cooldown is not None:
            changes["cooldown_seconds"] = int(cooldown)
        if channel is not None:
            changes["channel_id"] = channel.id
        elif any_channel:
            changes["channel_id"] = None
        store = self.bot.guild_settings
        current = await (store.update(interaction.guild_id, **changes) if changes else store.get(interaction.guild_id))
        prefix = "Saved. " if changes else ""
        await interaction.response.send_message(prefix + describe(current), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)


async def setup(bot) -> None:
    await bot.add_cog(SettingsCog(bot))
