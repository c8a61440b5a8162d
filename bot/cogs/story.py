"""/story: defer, stream the tale into the reply, finish with an embed and its buttons."""
from __future__ import annotations

import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import Tale
from bot.errors import NO_MENTIONS, CooldownActive, MemberError, QuillView
from model.generator import InvalidRequest, StoryRequest

EDIT_INTERVAL = 1.0  # Discord rate-limits message edits; about one a second streams smoothly
START_LIMITS = (1, 200)
CONTENT_LIMIT = 2000
EMBED_LIMIT = 4096


def tale_embed(tale: Tale) -> discord.Embed:
    embed = discord.Embed(title=tale.start[:256], description=tale.text[:EMBED_LIMIT], colour=0x7F0909)
    embed.set_footer(text=f"temperature {tale.temperature:g} · seed {tale.seed} · {tale.model} · tale #{tale.id}"
                          f" · 👍 {tale.votes}")
    return embed


class Cooldowns:
    """One story per member per `seconds`, per server; a story that fails gives the turn back."""

    def __init__(self):
        self.last: dict[tuple[int, int], float] = {}

    def take(self, guild_id: int, user_id: int, seconds: int) -> None:
        now = time.monotonic()
        wait = self.last.get((guild_id, user_id), -1e9) + seconds - now
        if wait > 0:
            raise CooldownActive(wait)
        self.last[(guild_id, user_id)] = now

    def give_back(self, guild_id: int, user_id: int) -> None:
        self.last.pop((guild_id, user_id), None)


class StoryView(QuillView):
    def __init__(self, cog: "StoryCog", tale: Tale):
        super().__init__(timeout=3600)
        self.cog, self.tale = cog, tale
        self.vote.label = f"👍 {tale.votes}"
        if tale.in_gallery:
            self.save.disabled = True

    @discord.ui.button(label="Save to gallery", style=discord.ButtonStyle.primary)
    async def save(self, interaction: discord.Interaction, button: discord.ui.Button):
        if interaction.user.id != self.tale.author_id:
            raise MemberError("Only the tale's author can save it to the gallery.")
        self.tale = await self.cog.bot.gallery.save_to_gallery(self.tale.guild_id, self.tale.id)
        button.disabled = True
        button.label = "In the gallery"
        await interaction.response.edit_message(view=self, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="👍", style=discord.ButtonStyle.secondary)
    async def vote(self, interaction: discord.Interaction, button: discord.ui.Button):
        self.tale, voted = await self.cog.bot.gallery.toggle_vote(self.tale.guild_id, self.tale.id,
                                                                  interaction.user.id)
        button.label = f"👍 {self.tale.votes}"
        await interaction.response.edit_message(embed=tale_embed(self.tale), view=self,
                                                allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Again", style=discord.ButtonStyle.secondary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button):
        await self.cog.tell(interaction, self.tale.start)


class StoryCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.cooldowns = Cooldowns()
        self.edit_interval = EDIT_INTERVAL

    @app_commands.command(name="story", description="Write a tale that begins with your words")
    @app_commands.describe(start="How the tale begins (1-200 characters)",
                           length="Length in characters (default: this server's setting)",
                           seed="Same seed and settings give the same tale")
    @app_commands.guild_only()
    async def story(self, interaction: discord.Interaction, start: app_commands.Range[str, 1, 200],
                    length: app_commands.Range[int, 100, 1900] | None = None,
                    seed: app_commands.Range[int, 0, 2**31 - 1] | None = None):
        await self.tell(interaction, start, length, seed)

    async def tell(self, interaction: discord.Interaction, start: str, length: int | None = None,
                   seed: int | None = None) -> Tale:
        bot, guild_id, user = self.bot, interaction.guild_id, interaction.user
        settings = await bot.guild_settings.get(guild_id)
        if settings.channel_id and interaction.channel_id != settings.channel_id:
            raise MemberError(f"I write stories in <#{settings.channel_id}> on this server.")
        if not (START_LIMITS[0] <= len(start.strip()) and len(start) <= START_LIMITS[1]):
            raise InvalidRequest(f"the start text must be {START_LIMITS[0]}-{START_LIMITS[1]} characters")
        request = StoryRequest(start, length or settings.story_length, settings.temperature, seed)
        request.validated(bot.generator.vocab, bot.generator.config)  # a bad prompt fails before deferring
        self.cooldowns.take(guild_id, user.id, settings.cooldown_seconds)
        try:
            await interaction.response.defer(thinking=True)
            story = await self._stream(interaction, request)
            tale = await bot.gallery.add(
                guild_id=guild_id, channel_id=interaction.channel_id or 0, author_id=user.id,
                author_name=user.display_name, start=start, text=story.text, temperature=request.temperature,
                seed=story.seed, model=story.model, card_hash=story.card_hash)
        except BaseException:
            self.cooldowns.give_back(guild_id, user.id)
            raise
        await interaction.edit_original_response(content=None, embed=tale_embed(tale), view=StoryView(self, tale),
                                                 allowed_mentions=NO_MENTIONS)
        return tale

    async def _stream(self, interaction: discord.Interaction, request: StoryRequest):
        text, last_edit = "", 0.0
        async for event in self.bot.generator.stream(request):
            if event.story is not None:
                return event.story
            text += event.text
            now = time.monotonic()
            if now - last_edit < self.edit_interval:
                continue
            last_edit = now
            if event.position:
                content = f"⏳ Waiting for the storyteller: you are number {event.position} in line."
            else:
                content = text if len(text) < CONTENT_LIMIT - 2 else "…" + text[-(CONTENT_LIMIT - 3):]
                content += " ✍️"
            await interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)


async def setup(bot) -> None:
    await bot.add_cog(StoryCog(bot))
