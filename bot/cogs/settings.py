"""/temperature and /settings: per-server settings; changing them needs Manage Server."""
from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import GuildSettings, WebGallery
from bot.errors import NO_MENTIONS, MemberError, counted, require_manage_server
from bot.limits import COOLDOWN_SECONDS, MAX_CHAPTERS, REPORT_THRESHOLD, STORY_LENGTH, TEMPERATURE, TOGETHER_LENGTH
from bot.web import gallery_url


def describe(s: GuildSettings) -> str:
    channel = f"<#{s.channel_id}>" if s.channel_id else "any channel"
    return (f"Temperature: **{s.temperature:g}** · story length: **{s.story_length}** characters · "
            f"cooldown: **{s.cooldown_seconds} s** per member · stories in: {channel} · "
            f"a tale is hidden after {counted(s.report_threshold, 'report', bold=True)} · at most **{s.max_chapters}** chapters · "
            f"**{s.together_length}** characters after each line written together")


def describe_web(gallery: WebGallery | None, public_url: str) -> str:
    if gallery is None or not gallery.published:
        return "the gallery is not on the web (web:on publishes it)"
    return f"the gallery is on the web at {gallery_url(public_url, gallery.slug)}"


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
                           together_length=f"Characters the bot writes after each member's line ({TOGETHER_LENGTH})",
                           web="on: the gallery's saved tales on the web; off: taken down at once; reset: a new "
                               "address")
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
                       | None = None, web: Literal["on", "off", "reset"] | None = None):
        public_url = self.bot.settings.public_url
        if web is not None and public_url is None:  # refused before anything changes
            raise MemberError("This bot has no web gallery: its operator has not set QUILL_WEB_PORT or "
                              "QUILL_PUBLIC_URL.")
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
        message = ("Saved. " if changes or web else "") + describe(current)
        if public_url is not None:
            message += " · " + describe_web(await self.web_gallery(interaction.guild_id, web), public_url)
            message += "; its earlier links show nothing now" if web == "reset" else ""
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def web_gallery(self, guild_id: int, web: str | None) -> WebGallery | None:
        """The server's web gallery once `web` (on, off, reset or None: unchanged) is applied."""
        galleries = self.bot.web_galleries
        if web == "reset":
            return await galleries.new_address(guild_id)
        if web is not None:
            return await galleries.publish(guild_id, web == "on")
        return await galleries.get(guild_id)


async def setup(bot) -> None:
    await bot.add_cog(SettingsCog(bot))
