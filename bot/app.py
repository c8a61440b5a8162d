"""The bot: opens the database, starts the generator client, holds the writing service (bot.writer)
and a tale's buttons, and loads one cog per feature."""
from __future__ import annotations

import hashlib
import json
import logging

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.ext import commands

from bot.db import CastStore, Database, GalleryStore, GuildSettingsStore, WebGalleryStore, WordListStore
from bot.errors import NO_MENTIONS, answer_error
from bot.metrics import Metrics, MetricsServer
from bot.settings import Settings
from bot.web import WebServer
from bot.views import TALE_BUTTONS
from bot.writing import Writer
from model.client import StoryGenerator

log = logging.getLogger("quill.bot")
EXTENSIONS = ("bot.cogs.story", "bot.cogs.settings", "bot.cogs.gallery", "bot.cogs.filter",
              "bot.cogs.cast")


class QuillTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)


class _NoVoiceNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def command_tree_hash(tree: app_commands.CommandTree, guild: discord.abc.Snowflake | None) -> str:
    """What Discord would be sent by a sync, hashed: equal hashes need no sync."""
    payload = sorted((c.to_dict(tree) for c in tree.get_commands(guild=guild)), key=lambda c: c["name"])
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class QuillBot(commands.AutoShardedBot):
    """One server or thousands with the same code: discord.py shards as Discord asks from 2,500 servers."""

    def __init__(self, settings: Settings, force_sync: bool = False, on_notice=None):
        # Quill sends text only: discord.py's notices about missing voice libraries are noise.
        logging.getLogger("discord.client").addFilter(_NoVoiceNotice())
        intents = discord.Intents.none()
        intents.guilds = True  # slash commands need no message content
        self.metrics = Metrics(self)
        # QUILL_SHARD_COUNT/QUILL_SHARDS split the shards across processes; unset, this one runs them all.
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, tree_cls=QuillTree,
                         allowed_mentions=NO_MENTIONS, help_command=None, shard_count=settings.shard_count,
                         shard_ids=list(settings.shard_ids) if settings.shard_ids is not None else None,
                         http_trace=self.metrics.http_trace())
        self.settings, self.force_sync, self.on_notice = settings, force_sync, on_notice
        if settings.discord_api:  # discord.py keeps the API's address on its Route classes
            discord.http.Route.BASE = discord.webhook.async_.Route.BASE = settings.discord_api
        self.db: Database | None = None
        self.generator: StoryGenerator | None = None
        self.metrics_server: MetricsServer | None = None
        self.web_server: WebServer | None = None
        self.writer = Writer(self)  # writes, streams and stores every story, chapter and reply

    async def prepare(self) -> None:
        """Everything but the Discord connection (the console mode and tests stop here), the web
        gallery included."""
        self.db = await Database.open(self.settings.database)
        self.guild_settings = GuildSettingsStore(self.db)
        self.gallery = GalleryStore(self.db)
        self.word_lists = WordListStore(self.db)
        self.casts = CastStore(self.db)
        self.web_galleries = WebGalleryStore(self.db)
        self.generator = StoryGenerator(self.settings.generator_config(), self.on_notice)
        await self.generator.start()
        self.add_dynamic_items(*TALE_BUTTONS)  # whichever cog showed a tale, its buttons work after a restart
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.settings.web_port:
            self.web_server = WebServer(self.db, self.settings.public_url, self.settings.web_host,
                                        self.settings.web_port)
            await self.web_server.start()

    async def setup_hook(self) -> None:
        if self.settings.discord_api and self.shard_count is not None:
            # Given its shards, discord.py connects to Discord's default gateway without asking:
            # ask the API we were given instead.
            _, url, _ = await self.http.get_bot_gateway()
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        await self.prepare()
        if self.settings.metrics_port:
            self.metrics_server = MetricsServer(self.metrics, self.health_problem, self.settings.metrics_port,
                                               self.settings.metrics_host)
            await self.metrics_server.start()
        await self.sync_commands(force=self.force_sync)

    def health_problem(self) -> str | None:
        """None when the bot can tell stories: every shard of this process connected and the
        generator ready; otherwise what is wrong (/healthz)."""
        if self.generator is None or not self.generator.ready:
            return "the story generator is not ready"
        if self.is_closed() or not self.is_ready():
            return "not connected to Discord"
        down = sorted(shard_id for shard_id, shard in self.shards.items() if shard.is_closed())
        if down:
            return f"shards {', '.join(map(str, down))} not connected to Discord"
        return None

    async def sync_commands(self, force: bool = False) -> bool:
        """Send the command tree to Discord only when it changed since the last sync (its hash is
        kept in the database) or when forced (`quill sync`): bots that sync on every start get
        rate-limited. Of several processes starting on one database, the one that records the new
        hash syncs. With DEV_GUILD_ID the commands go to that server only, where they appear at once."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        key = f"command_tree:{guild.id if guild else 'global'}"
        digest = command_tree_hash(self.tree, guild)
        if force:
            await self.db.set_meta(key, digest)
        elif not await self.db.claim_meta(key, digest):
            log.info("slash commands unchanged since the last sync (or another process syncs them); not syncing")
            return False
        try:
            await self.tree.sync(guild=guild)
        except BaseException:
            await self.db.set_meta(key, "")  # not synced: the next start tries again
            raise
        log.info("slash commands synced (%s)", f"server {guild.id}" if guild else "global")
        return True

    async def close(self) -> None:
        if self.metrics_server:
            await self.metrics_server.close()
        if self.web_server:
            await self.web_server.close()
        if self.generator:
            await self.generator.close()
        if self.db:
            await self.db.close()
        await super().close()
