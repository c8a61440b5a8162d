"""Writing together: `/story start:… together:True` opens a thread with an opening; members take
turns with **Add a line** (a modal: their own sentence, checked like a start), and the bot writes
on from each line in a new message. **Finish** (the opener or Manage Messages) closes the round
and offers the whole tale to the gallery with every author credited. No message-content intent:
members' lines arrive through the modal."""
from __future__ import annotations

import discord
from discord.ext import commands

from bot.db import Chapter, Tale, TaleFinished, tale_so_far, writers
from bot.limits import LINE, TOGETHER_MAX_PARTS
from bot.views import EMBED_LIMIT, HIDDEN_NOTICE, TaleButton, story_view, tale_embed
from bot.writing import check_start, member_name, say_what_was_folded, storing_a_tale
from bot.errors import NO_MENTIONS, MemberError, answer_error, counted, moderates
from model.generator import InvalidRequest

BOT_AUTHOR = (0, "Quill")


def turn_embed(tale: Tale, line: Chapter, reply: Chapter) -> discord.Embed:
    text = f"**{discord.utils.escape_markdown(line.author_name)}:** {line.text.strip()}\n\n{reply.text.strip()}"
    embed = discord.Embed(title=tale.start[:256], description=text[:EMBED_LIMIT], colour=0x1F5E3A)
    embed.set_footer(text=f"tale #{tale.id} · part {reply.number} · seed {reply.seed}")
    return embed


class LineModal(discord.ui.Modal, title="Add a line"):
    line = discord.ui.TextInput(label="Your line", style=discord.TextStyle.paragraph,
                                min_length=LINE.low, max_length=LINE.high)

    def __init__(self, tale_id: int):
        super().__init__()
        self.tale_id = tale_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.client.together.add_line(interaction, self.tale_id, self.line.value)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await answer_error(interaction, error)


class AddLineButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:line:(?P<id>[0-9]+)"):
    kind = "line"

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "Add a line", discord.ButtonStyle.primary)

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        if tale.finished:
            raise TaleFinished(tale.id)
        await interaction.response.send_modal(LineModal(tale.id))


class FinishButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:finish:(?P<id>[0-9]+)"):
    kind = "finish"

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "Finish", discord.ButtonStyle.secondary)

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        await interaction.client.together.finish(interaction, tale)


TOGETHER_BUTTONS = (AddLineButton, FinishButton)


def together_view(tale: Tale) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(AddLineButton(tale.id))
    view.add_item(FinishButton(tale.id))
    return view


class TogetherCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*TOGETHER_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*TOGETHER_BUTTONS)

    async def open(self, interaction: discord.Interaction, start: str, length: int | None = None,
                   seed: int | None = None) -> Tale:
        """The opening, written from the start (`length` new characters, else the server's length for
        a turn), in a new thread where members take turns."""
        bot = self.bot
        check_start(start)
        settings = await bot.guild_settings.get(interaction.guild_id)
        request = await self.bot.writer.request(interaction, start, length or settings.together_length, seed, settings)

        tale = await self.bot.writer.write(interaction, request,
                                           storing_a_tale(bot, interaction, start, request, together=True))
        opening = tale_embed(tale)
        opening.set_footer(text=f"tale #{tale.id} · written together: press Add a line to take a turn")
        try:
            thread = await interaction.channel.create_thread(name=f"Quill: {start}"[:100],
                                                             type=discord.ChannelType.public_thread,
                                                             auto_archive_duration=1440)
            await thread.send(embed=opening, view=together_view(tale), allowed_mentions=NO_MENTIONS)
        except (discord.HTTPException, AttributeError):  # no thread here (permissions, a thread already)
            await interaction.edit_original_response(content=None, embed=opening, view=together_view(tale),
                                                     allowed_mentions=NO_MENTIONS)
            return tale
        await interaction.edit_original_response(
            content=f"We are writing \u201c{start}\u201d together in {thread.mention}: add a line there.",
            embed=None, view=None, allowed_mentions=NO_MENTIONS)
        await say_what_was_folded(interaction, request)
        return tale

    async def add_line(self, interaction: discord.Interaction, tale_id: int, line: str) -> tuple[Chapter, Chapter]:
        """A member's own line, checked like a start, then the bot's reply written on from it; both
        stored together, in order, each with its author."""
        bot, user, guild_id = self.bot, interaction.user, interaction.guild_id
        tale = await bot.gallery.get(guild_id, tale_id)
        if not tale.together:
            raise MemberError(f"Tale #{tale.id} is not written together: Continue writes its next chapter.")
        if tale.hidden:
            raise MemberError(HIDDEN_NOTICE.format(id=tale.id))
        if tale.finished:
            raise TaleFinished(tale.id)
        if not line.strip() or len(line) > LINE.high:
            raise InvalidRequest(f"a line is {LINE} characters")
        settings = await bot.guild_settings.get(guild_id)
        chapters = await bot.gallery.chapters(guild_id, tale.id)
        # The line is the request's start, checked and normalised once; its leading break makes it a
        # paragraph of its own. A line is a turn in the round, not a story asked for, so it takes no
        # cooldown: members answering each other are not told to wait (the shares still hold).
        request = await self.bot.writer.continuation(interaction, tale_so_far(tale, chapters),
                                                     settings.together_length, settings, tale.cast_entries,
                                                     start="\n" + line.strip(), turn=False)

        async def store(story) -> list[Chapter]:
            line = story.text[:story.begins]
            return await bot.gallery.add_chapters(
                guild_id, tale.id, [("line", user.id, member_name(user, request.blocked_words), line, 0),
                                    ("reply", *BOT_AUTHOR, story.written, story.seed)],
                limit=TOGETHER_MAX_PARTS)

        parts = await self.bot.writer.write(interaction, request, store, turn=False)
        await interaction.edit_original_response(content=None, embed=turn_embed(tale, *parts),
                                                 view=together_view(tale), allowed_mentions=NO_MENTIONS)
        await say_what_was_folded(interaction, request)
        return parts[0], parts[1]

    async def finish(self, interaction: discord.Interaction, tale: Tale) -> Tale:
        if interaction.user.id != tale.author_id and not moderates(interaction):
            raise MemberError("Only the member who opened this tale, or members with Manage Messages, can finish it.")
        tale = await self.bot.gallery.finish(tale.guild_id, tale.id)
        chapters = await self.bot.gallery.chapters(tale.guild_id, tale.id)
        whole = tale_so_far(tale, chapters).strip()
        embed = tale_embed(tale)
        embed.description = whole if len(whole) <= EMBED_LIMIT else "\u2026" + whole[-(EMBED_LIMIT - 1):]
        embed.add_field(name="Written together by", value=", ".join(writers(tale, chapters))[:1024])
        await interaction.response.send_message(
            f"The round is finished ({counted(tale.chapters, 'part')}; `/tale export id:{tale.id}` gives it whole). "
            "Its opener can save it to the gallery:", embed=embed, view=story_view(tale), allowed_mentions=NO_MENTIONS)
        return tale


async def setup(bot) -> None:
    await bot.add_cog(TogetherCog(bot))
