"""What members see of a tale and of a list: a tale's embeds and its buttons (their custom_id
carries the tale's number, so they work after a restart; a tale written together has Add a line
and Finish), the streamed reply's content, and the
shared paginator: Previous/Next buttons only the invoker can press, disabled on timeout, with any
other items beside them (a tale's own buttons, which every member may press)."""
from __future__ import annotations

from typing import Awaitable, Callable

import discord

from bot.db import Chapter, Tale, TaleFinished
from bot.errors import NO_MENTIONS, MemberError, QuillView, answer_error
from bot.limits import LINE
from bot.web import tale_link

PageSource = Callable[[int], Awaitable[tuple[discord.Embed, int]]]  # page -> (embed, page count)


class Paginator(QuillView):
    def __init__(self, invoker_id: int, source: PageSource, timeout: float = 180, items=()):
        super().__init__(timeout=timeout)
        self.invoker_id, self.source = invoker_id, source
        self.page, self.pages = 0, 1
        self.interaction: discord.Interaction | None = None
        for item in items:
            self.add_item(item)

    async def start(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        embed, self.pages = await self.source(0)
        self._refresh()
        await interaction.response.send_message(embed=embed, view=self, allowed_mentions=NO_MENTIONS)

    def _refresh(self) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1

    async def _show(self, interaction: discord.Interaction, page: int) -> None:
        if interaction.user.id != self.invoker_id:
            raise MemberError("Only the member who opened this gallery can turn its pages.")
        embed, self.pages = await self.source(page)
        self.page = min(page, self.pages - 1)
        self._refresh()
        await interaction.response.edit_message(embed=embed, view=self, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button):
        await self._show(interaction, self.page - 1)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button):
        await self._show(interaction, self.page + 1)

    async def on_timeout(self) -> None:
        for item in (self.previous, self.next):  # a tale's buttons work whenever they are pressed
            item.disabled = True
        if self.interaction is not None:
            try:
                await self.interaction.edit_original_response(view=self)
            except discord.HTTPException:
                pass  # the message is gone; nothing to disable


# -- a tale ------------------------------------------------------------------------------------------
CONTENT_LIMIT = 2000
EMBED_LIMIT = 4096
WRITING = " ✍️"  # the pen shown while the tale is being written


def streaming_content(text: str, position: int = 0) -> str:
    """A streamed edit: the tale so far (its end, past Discord's limit) and the pen; never over 2,000."""
    if position:
        return f"⏳ Waiting for the storyteller: you are number {position} in line."
    room = CONTENT_LIMIT - len(WRITING)
    if len(text) > room:
        text = "…" + text[-(room - 1):]
    return text + WRITING


def tale_embed(tale: Tale) -> discord.Embed:
    embed = discord.Embed(title=tale.start[:256], description=tale.text[:EMBED_LIMIT], colour=0x7F0909)
    chapters = f" · {tale.chapters} chapters" if tale.chapters > 1 else ""
    embed.set_footer(text=f"temperature {tale.temperature:g} · seed {tale.seed} · {tale.model} · tale #{tale.id}"
                          f"{chapters} · 👍 {tale.votes}")
    return embed


def chapter_embed(tale: Tale, chapter: Chapter) -> discord.Embed:
    embed = discord.Embed(title=f"{tale.start[:200]} · chapter {chapter.number}",
                          description=chapter.text.strip()[:EMBED_LIMIT], colour=0x7F0909)
    embed.set_footer(text=f"chapter {chapter.number} of {tale.chapters} · asked by {chapter.author_name} · "
                          f"seed {chapter.seed} · tale #{tale.id} · 👍 {tale.votes}")
    return embed


class TaleButton:
    """A button whose custom_id carries the tale id, so it keeps working after a restart and
    never times out (discord.py rebuilds it from the id: a DynamicItem)."""

    kind = ""
    needs_visible = True  # a tale hidden after reports takes no votes, saves or retellings

    def __init__(self, tale_id: int, label: str, style=discord.ButtonStyle.secondary, disabled: bool = False):
        super().__init__(discord.ui.Button(label=label, style=style, disabled=disabled,
                                           custom_id=f"quill:{self.kind}:{tale_id}"))
        self.tale_id = tale_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            tale = await interaction.client.gallery.get(interaction.guild_id, self.tale_id)
            if tale.hidden and self.needs_visible:
                raise MemberError(HIDDEN_NOTICE.format(id=tale.id))
            await self.press(interaction, tale)
        except Exception as error:  # a rebuilt item has no view of ours to route errors
            await answer_error(interaction, error)


class SaveButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:save:(?P<id>[0-9]+)"):
    kind = "save"

    def __init__(self, tale_id: int, saved: bool = False):
        super().__init__(tale_id, "In the gallery" if saved else "Save to gallery", discord.ButtonStyle.primary,
                         disabled=bool(saved))

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        if interaction.user.id != tale.author_id:
            raise MemberError("Only the tale's author can save it to the gallery.")
        tale = await interaction.client.gallery.save_to_gallery(tale.guild_id, tale.id)
        await interaction.response.edit_message(view=story_view(tale, await tale_link(interaction.client, tale)),
                                                allowed_mentions=NO_MENTIONS)
        await interaction.followup.send(f"Saved: tale #{tale.id} is in this server's gallery now.", ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)


class VoteButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:vote:(?P<id>[0-9]+)"):
    kind = "vote"

    def __init__(self, tale_id: int, votes: int = 0):
        super().__init__(tale_id, f"👍 {votes}")

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        tale, _ = await interaction.client.gallery.toggle_vote(tale.guild_id, tale.id, interaction.user.id)
        await interaction.response.edit_message(embed=tale_embed(tale),
                                                view=story_view(tale, await tale_link(interaction.client, tale)),
                                                allowed_mentions=NO_MENTIONS)


class AgainButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button], template=r"quill:again:(?P<id>[0-9]+)"):
    kind = "again"

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "Again")

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        # A new seed, with the tale's own length and cast.
        await interaction.client.writer.tell(interaction, tale.start, tale.length or None, cast=tale.cast_entries)


class ReportButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button],
                   template=r"quill:report:(?P<id>[0-9]+)"):
    kind = "report"
    needs_visible = False  # a hidden tale can still be reported (and says so)

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "\U0001f6a9 Report", discord.ButtonStyle.danger)

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        bot = interaction.client
        settings = await bot.guild_settings.get(tale.guild_id)
        tale, new = await bot.gallery.report(tale.guild_id, tale.id, interaction.user.id, settings.report_threshold)
        if tale.hidden:  # the message in the channel stops showing it too
            await interaction.response.edit_message(content=HIDDEN_NOTICE.format(id=tale.id), embed=None, view=None,
                                                    allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.defer()
        await interaction.followup.send("Thank you: the moderators will look at it." if new
                                        else "You have reported this tale already.", ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)


class ContinueButton(TaleButton, discord.ui.DynamicItem[discord.ui.Button],
                     template=r"quill:continue:(?P<id>[0-9]+)"):
    kind = "continue"

    def __init__(self, tale_id: int):
        super().__init__(tale_id, "Continue", discord.ButtonStyle.success)

    async def press(self, interaction: discord.Interaction, tale: Tale) -> None:
        await interaction.client.writer.continue_tale(interaction, tale)


HIDDEN_NOTICE = "\U0001f6a9 Tale #{id} was reported and is hidden until a moderator looks at it."
# A tale written together: a member's turn (a modal: their own line) and the end of the round.
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
        await interaction.client.writer.add_line(interaction, self.tale_id, self.line.value)

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
        await interaction.client.writer.finish_together(interaction, tale)


def together_view(tale: Tale) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(AddLineButton(tale.id))
    view.add_item(FinishButton(tale.id))
    return view


TALE_BUTTONS = (SaveButton, VoteButton, AgainButton, ContinueButton, ReportButton, AddLineButton, FinishButton)


def tale_buttons(tale: Tale, link: str | None = None) -> list[discord.ui.Item]:
    """The tale's buttons, and with its page's `link` (bot/web.py tale_link) a link button: Discord
    opens it, so it has no custom_id and never reaches the bot."""
    buttons = [SaveButton(tale.id, tale.in_gallery), VoteButton(tale.id, tale.votes), AgainButton(tale.id),
               ContinueButton(tale.id), ReportButton(tale.id)]
    return buttons + [discord.ui.Button(label="Read on the web", url=link)] if link else buttons


def story_view(tale: Tale, link: str | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in tale_buttons(tale, link):
        view.add_item(item)
    return view
