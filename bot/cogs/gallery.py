"""/gallery, /tale show, /tale remove: a server's saved tales, and only that server's."""
from __future__ import annotations

import io
from typing import Literal

import discord
from discord import app_commands
from discord.utils import escape_markdown
from discord.ext import commands

from bot.db import TaleNotFound, writers
from bot.errors import NO_MENTIONS, MemberError, counted, moderates
from bot.views import HIDDEN_NOTICE, Paginator, chapter_embed, story_view, tale_buttons, tale_embed
from bot.web import tale_link
from bot.writing import member_name, server_words

SNIPPET = 180


def tale_text(tale, chapters) -> str:
    """A whole tale for reading in one piece: chapters under their headings, lines under their writers."""
    names = ", ".join(writers(tale, chapters))
    parts = [f"{tale.start}\nA tale of {names}, told by Quill ({tale.model}), tale #{tale.id}\n",
             ("" if tale.together else "Chapter 1\n\n") + f"{tale.text.strip()}\n"]
    for c in chapters:
        if c.kind == "chapter":
            parts.append(f"Chapter {c.number} (asked for by {c.author_name})\n\n{c.text.strip()}\n")
        elif c.kind == "line":
            parts.append(f"[{c.author_name}] {c.text.strip()}\n")
        else:
            parts.append(f"{c.text.strip()}\n")
    return "\n".join(parts)


def can_read(interaction: discord.Interaction, channel_id: int) -> bool:
    """Whether the member can see the channel (or thread) a tale was told in; a channel that is gone
    counts as one they cannot."""
    channel = interaction.guild.get_channel_or_thread(channel_id) if interaction.guild else None
    return channel is not None and channel.permissions_for(interaction.user).view_channel


class GalleryCog(commands.Cog):
    tale = app_commands.Group(name="tale", description="One tale of this server", guild_only=True)

    def __init__(self, bot):
        self.bot = bot

    @app_commands.command(name="gallery", description="The best tales of this server")
    @app_commands.describe(sort="top: most 👍 first; new: latest first; reported: hidden tales (moderators)",
                           author="Only this member's tales")
    @app_commands.guild_only()
    async def gallery(self, interaction: discord.Interaction, sort: Literal["top", "new", "reported"] = "top",
                      author: discord.User | None = None):
        guild_id = interaction.guild_id
        store = self.bot.gallery
        if sort == "reported" and not moderates(interaction):
            raise app_commands.MissingPermissions(["manage_messages"])
        heading = {"top": "top tales", "new": "newest tales",
                   "reported": "reported tales, hidden (/tale restore or /tale remove)"}[sort]

        words = await server_words(self.bot, guild_id)

        async def page(number: int) -> tuple[discord.Embed, int]:
            tales, pages = await store.page(guild_id, number, sort, author.id if author else None)
            title = f"Gallery: {heading}" + (f" by {escape_markdown(member_name(author, words))}" if author else "")
            embed = discord.Embed(title=title, colour=0x7F0909)
            if not tales:
                embed.description = ("No reported tales." if sort == "reported" else
                                     "No tales saved yet. Write one with /story and press **Save to gallery**.")
            for t in tales:
                snippet = t.text if len(t.text) <= SNIPPET else t.text[:SNIPPET].rsplit(" ", 1)[0] + " …"
                chapters = f" · {t.chapters} chapters" if t.chapters > 1 else ""
                by = ", ".join(writers(t, await store.chapters(guild_id, t.id)) if t.chapters > 1 else [t.author_name])
                embed.add_field(name=f"#{t.id} · {t.start[:80]}{chapters} · 👍 {t.votes}",
                                value=f"{snippet}\n— {escape_markdown(by[:200])}", inline=False)
            embed.set_footer(text=f"page {min(number, pages - 1) + 1} of {pages}")
            return embed, pages

        await Paginator(interaction.user.id, page).start(interaction)

    @tale.command(name="show", description="Show one tale by its number")
    @app_commands.describe(id="The tale's number (#id in its footer)")
    async def show(self, interaction: discord.Interaction, id: app_commands.Range[int, 1]):
        found = await self._visible(interaction, id)
        link = await tale_link(self.bot, found)
        if found.chapters == 1:
            await interaction.response.send_message(embed=tale_embed(found), view=story_view(found, link),
                                                    allowed_mentions=NO_MENTIONS)
            return
        chapters = await self.bot.gallery.chapters(interaction.guild_id, id)

        async def page(number: int) -> tuple[discord.Embed, int]:  # page 0 is the tale's own text
            return (tale_embed(found) if number == 0 else chapter_embed(found, chapters[number - 1])), found.chapters

        await Paginator(interaction.user.id, page, items=tale_buttons(found, link)).start(interaction)

    @tale.command(name="export", description="The whole tale, every chapter, as a .txt file")
    @app_commands.describe(id="The tale's number (#id in its footer)")
    async def export(self, interaction: discord.Interaction, id: app_commands.Range[int, 1]):
        found = await self._visible(interaction, id)
        chapters = await self.bot.gallery.chapters(interaction.guild_id, id)
        text = tale_text(found, chapters)
        await interaction.response.send_message(
            f"Tale #{id}, {counted(found.chapters, 'chapter')}.", allowed_mentions=NO_MENTIONS,
            file=discord.File(io.BytesIO(text.encode("utf-8")), filename=f"tale-{id}.txt"))

    async def _visible(self, interaction: discord.Interaction, tale_id: int):
        """The tale, if this member may read it: one in the gallery, their own, or one told in a
        channel they can read (tale numbers count up, so any other answer would open staff
        channels and private threads); otherwise the same answer as for no tale at all."""
        found = await self.bot.gallery.get(interaction.guild_id, tale_id)
        if not (found.in_gallery or found.author_id == interaction.user.id or can_read(interaction, found.channel_id)):
            raise TaleNotFound(tale_id)
        if found.hidden and not moderates(interaction):
            raise MemberError(HIDDEN_NOTICE.format(id=tale_id))
        return found

    @tale.command(name="restore", description="Show a reported tale again (members with Manage Messages)")
    @app_commands.describe(id="The tale's number (see /gallery sort:reported)")
    async def restore(self, interaction: discord.Interaction, id: app_commands.Range[int, 1]):
        if not moderates(interaction):
            raise app_commands.MissingPermissions(["manage_messages"])
        await self.bot.gallery.restore(interaction.guild_id, id)
        await interaction.response.send_message(f"Tale #{id} is shown again; its reports are cleared.",
                                                ephemeral=True, allowed_mentions=NO_MENTIONS)

    @tale.command(name="remove", description="Remove a tale (its author, or members with Manage Messages)")
    @app_commands.describe(id="The tale's number (#id in its footer)")
    async def remove(self, interaction: discord.Interaction, id: app_commands.Range[int, 1]):
        found = await self.bot.gallery.get(interaction.guild_id, id)
        if found.author_id != interaction.user.id and not moderates(interaction):
            raise MemberError("Only the tale's author or members with Manage Messages can remove it.")
        await self.bot.gallery.remove(interaction.guild_id, id)
        await interaction.response.send_message(f"Tale #{id} was removed.", ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)


async def setup(bot) -> None:
    await bot.add_cog(GalleryCog(bot))
