"""The shared paginator: Previous/Next buttons only the invoker can press, disabled on timeout, and
any other items beside them (a tale's own buttons, which every member may press)."""
from __future__ import annotations

from typing import Awaitable, Callable

import discord

from bot.errors import NO_MENTIONS, MemberError, QuillView

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
