"""The bot: opens the database, starts the generator client, loads one cog per feature."""
from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import Database, GalleryStore, GuildSettingsStore
from bot.errors import NO_MENTIONS, answer_error
from bot.settings import Settings
from model.client import StoryGenerator

log = logging.getLogger("quill.bot")
EXTENSIONS = ("bot.cogs.story", "bot.cogs.settings", "bot.cogs.gallery")


class QuillTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)


class QuillBot(commands.Bot):
    def __init__(self, settings: Settings):
        intents = discord.Intents.none()
        intents.guilds = True  # slash commands need no message content
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, tree_cls=QuillTree,
                         allowed_mentions=NO_MENTIONS, help_command=None)
        self.settings = settings
        self.db: Database | None = None
        self.generator: StoryGenerator | None = None

    async def prepare(self) -> None:
        """Everything but the Discord connection (the console mode and tests stop here)."""
        self.db = await Database.open(self.settings.database)
        self.guild_settings = GuildSettingsStore(self.db)
        self.gallery = GalleryStore(self.db)
        self.generator = StoryGenerator(self.settings.generator_config())
        await self.generator.start()
        for extension in EXTENSIONS:
            await self.load_extension(extension)

    async def setup_hook(self) -> None:
        await self.prepare()
        if self.settings.dev_guild_id:  # instant, for development
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:  # global commands can take a while to appear
            await self.tree.sync()

    async def close(self) -> None:
        if self.generator:
            await self.generator.close()
        if self.db:
            await self.db.close()
        await super().close()
