"""What a member is told when something goes wrong: short, plain, never a stack trace."""
from __future__ import annotations

import logging
import math

import discord
from discord import app_commands

from bot.db import ChapterLimit, ReportLimit, TaleFinished, TaleNotFound
from model.generator import GeneratorError

log = logging.getLogger("quill.bot")
NO_MENTIONS = discord.AllowedMentions.none()


class MemberError(Exception):
    """A refusal whose message is meant for the member (cooldown, wrong channel, not the author)."""


def require_manage_server(interaction: discord.Interaction) -> None:
    # Checked in the command too, not only by Discord's default permissions, which admins can override.
    if not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])


def moderates(interaction: discord.Interaction) -> bool:
    """Whether the member moderates the server's tales: Manage Messages granted server-wide (by a
    role), not only in the channel where they ask, so a moderator of one channel is not one of the
    whole gallery."""
    permissions = getattr(interaction.user, "guild_permissions", None)
    return bool(permissions is not None and permissions.manage_messages)


def counted(n: int, thing: str, bold: bool = False) -> str:
    """ "1 chapter", "2 chapters" (the number in bold for settings): a count and its noun, in the
    right number."""
    return f"{f'**{n}**' if bold else n} {thing if n == 1 else thing + 's'}"


async def reply_privately(interaction: discord.Interaction, message: str) -> None:
    await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)


class CooldownActive(MemberError):
    def __init__(self, seconds: float):
        super().__init__(f"Easy there! You can ask for another story in {math.ceil(seconds)} s.")  # never "0 s"


# Discord still shows a command that was deleted or changed until the new tree reaches the client.
STALE_COMMAND = (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)
STALE_MESSAGE = "This command was updated; try again in a minute."
PERMISSION_NAMES = {"manage_guild": "Manage Server", "manage_messages": "Manage Messages"}


def member_message(error: Exception) -> str | None:
    """The message for an error a member can cause or meet; None for a bug."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, STALE_COMMAND):
        return STALE_MESSAGE
    if isinstance(error, app_commands.MissingPermissions):
        names = " and ".join(PERMISSION_NAMES.get(p, p.replace("_", " ").title()) for p in error.missing_permissions)
        return f"You need the {names} permission to do that."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "Stories are written in servers, not in direct messages."
    if isinstance(error, app_commands.TransformerError):
        return f"That value is not valid: \u201c{str(error.value)[:100]}\u201d."
    if isinstance(error, (MemberError, GeneratorError, TaleNotFound, ChapterLimit, TaleFinished, ReportLimit)):
        text = str(error)
        text = text[:1].upper() + text[1:]
        return text if text.endswith((".", "!", "?", ")")) else text + "."
    return None


async def answer_error(interaction: discord.Interaction, error: Exception) -> None:
    """Tell the member (ephemerally) or, for a bug, log it with the command and guild."""
    message = member_message(error)
    if isinstance(error, STALE_COMMAND):
        log.warning("stale command from guild %s: %s", interaction.guild_id, error)
    elif message is None:
        command = getattr(interaction.command, "qualified_name", None) or "a button"
        log.error("error in %s (guild %s)", command, interaction.guild_id,
                  exc_info=(type(error), error, error.__traceback__))
        message = "Something went wrong on my side; it has been logged. Please try again."
    if not interaction.response.is_done():
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    try:  # a public "thinking..." message is replaced by a private answer
        await interaction.delete_original_response()
    except discord.HTTPException:
        pass
    await interaction.followup.send(message, ephemeral=True, allowed_mentions=NO_MENTIONS)


class QuillView(discord.ui.View):
    """Base of every view: its errors get the same treatment as commands'."""

    async def on_error(self, interaction: discord.Interaction, error: Exception, item) -> None:
        await answer_error(interaction, error)
