"""/temperature and /settings: per-server settings; changing them needs Manage Server."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import GuildSettings
from bot.errors import NO_MENTIONS, counted, require_manage_server
from bot.limits import COOLDOWN_SECONDS, MAX_CHAPTERS, REPORT_THRESHOLD, STORY_LENGTH, TEMPERATURE, TOGETHER_LENGTH


def describe(s: GuildSettings) -> str:
    channel = f"<#{s.channel_id}>" if s.channel_id else "any channel"
    return (f"Temperature: **{s.temperature:g}** · story length: **{s.story_length}** characters · "
            f"cooldown: **{s.cooldown_seconds} s** per member · stories in: {channel} · "
            f"a tale is hidden after {counted(s.report_threshold, 'report', bold=True)} · at most **{s.max_chapters}** chapters · "
            f"**{s.together_length}** characters after each line written together")


class SettingsCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    @app_commands.command(name="temperature", description="Show or set how adventurous the storyteller is")
    @app_commands.describe(value=f"{TEMPERATURE.low:g} (safe, repetitive) to {TEMPERATURE.high:g} (wild); "
                                 f"the default is {TEMPERATURE.default:g}")
    @app_commands.guild_only()
    async def temperature(self, interaction: discord.Interaction,
                          value: app_commands.Range[float, TEMPERATURE.low, TEMPERATURE.high] | None = None):
        store = self.bot.guild_settings
        if value is None:
            current = await store.get(interaction.guild_id)
            message = f"This server's temperature is **{current.temperature:g}**."
        else:
            require_manage_server(interaction)
            updated = await store.update(interaction.guild_id, temperature=round(float(value), 2))
            message = f"Temperature set to **{updated.temperature:g}**."
        await interaction.response.send_message(message, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="settings", description="Show or change this server's story settings")
    @app_commands.describe(length=f"New characters in a story or chapter ({STORY_LENGTH})",
                           cooldown=f"Seconds a member waits between stories ({COOLDOWN_SECONDS})",
                           channel="The only channel the bot writes stories in",
                           any_channel="Allow stories in every channel again",
                           report_threshold=f"Reports from this many members hide a tale ({REPORT_THRESHOLD})",
                           max_chapters=f"Chapters a tale may have, Continue included ({MAX_CHAPTERS})",
                           together_length=f"Characters the bot writes after each member's line ({TOGETHER_LENGTH})")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def settings(self, interaction: discord.Interaction,
                       length: app_commands.Range[int, STORY_LENGTH.low, STORY_LENGTH.high] | None = None,
                       cooldown: app_commands.Range[int, COOLDOWN_SECONDS.low, COOLDOWN_SECONDS.high] | None = None,
                       channel: discord.TextChannel | None = None, any_channel: bool = False,
                       report_threshold: app_commands.Range[int, REPORT_THRESHOLD.low, REPORT_THRESHOLD.high]
                       | None = None,
                       max_chapters: app_commands.Range[int, MAX_CHAPTERS.low, MAX_CHAPTERS.high] | None = None,
                       together_length: app_commands.Range[int, TOGETHER_LENGTH.low, TOGETHER_LENGTH.high]
                       | None = None):
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
