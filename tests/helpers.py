"""Strict Discord mocks shared by every bot test: an Interaction whose response, followup and
edits are recorded, with a guild, a member and that member's permissions. Every mock is
spec_set, so setting or reading an attribute that discord.py does not have fails the test."""
from __future__ import annotations

import asyncio
from unittest.mock import AsyncMock, MagicMock

import discord


def make_interaction(bot, *, guild_id: int = 1, user_id: int = 10, name: str = "Luna", channel_id: int = 100,
                     manage_guild: bool = False, manage_messages: bool = False, command=None) -> MagicMock:
    interaction = MagicMock(spec_set=discord.Interaction)
    interaction.client = bot
    interaction.command = command
    # Interaction.extras is discord.py's own place for custom data: what the test wants to know.
    state = interaction.extras = {"done": False}
    interaction.guild_id, interaction.channel_id = guild_id, channel_id
    interaction.guild = MagicMock(spec_set=discord.Guild)
    interaction.guild.id = guild_id
    interaction.user = MagicMock(spec_set=discord.Member)
    interaction.user.id, interaction.user.display_name, interaction.user.mention = user_id, name, f"<@{user_id}>"
    interaction.permissions = discord.Permissions(manage_guild=manage_guild, manage_messages=manage_messages)
    interaction.user.guild_permissions = interaction.permissions  # granted by a role, server-wide
    response = MagicMock(spec_set=discord.InteractionResponse)

    async def answer(*args, **kwargs):
        state["done"] = True

    response.is_done.side_effect = lambda: state["done"]
    response.defer = AsyncMock(side_effect=answer)
    response.send_message = AsyncMock(side_effect=answer)
    response.edit_message = AsyncMock(side_effect=answer)
    response.send_modal = AsyncMock(side_effect=answer)
    interaction.response = response
    interaction.channel = MagicMock(spec_set=discord.TextChannel)
    thread = MagicMock(spec_set=discord.Thread)
    thread.mention, thread.send = f"<#{channel_id + 1}>", AsyncMock()
    interaction.channel.create_thread = AsyncMock(return_value=thread)
    interaction.followup = MagicMock(spec_set=discord.Webhook)
    interaction.followup.send = AsyncMock()
    interaction.edit_original_response = AsyncMock()
    interaction.delete_original_response = AsyncMock()
    return interaction


def all_sends(interaction) -> list:
    """Every call that puts text in front of members."""
    return [*interaction.response.send_message.call_args_list, *interaction.response.edit_message.call_args_list,
            *interaction.followup.send.call_args_list, *interaction.edit_original_response.call_args_list]


def ephemeral_text(interaction) -> str | None:
    """The private answer the member got, if any."""
    for call in [*interaction.response.send_message.call_args_list, *interaction.followup.send.call_args_list]:
        if call.kwargs.get("ephemeral"):
            return call.args[0] if call.args else call.kwargs.get("content")
    return None


def final_embed(interaction) -> discord.Embed | None:
    for call in reversed(interaction.edit_original_response.call_args_list):
        if call.kwargs.get("embed"):
            return call.kwargs["embed"]
    return None


def button(view, label_start: str):
    """The item whose button label starts so (a plain button or a DynamicItem around one)."""
    from bot.console import find_button

    item = find_button(view, label_start)
    assert item is not None, f"no button {label_start!r}"
    return item


def label(item) -> str:
    return getattr(item, "item", item).label


def tale_id(view) -> int:
    return int(button(view, "Again").custom_id.rsplit(":", 1)[1])


async def until(condition, timeout: float = 30.0) -> None:
    """Wait for `condition()` to hold (a condition, not a fixed sleep); fail after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still not so after {timeout} s: {condition}")
        await asyncio.sleep(0.005)


def add(scheduler, joining: list[tuple]) -> list[tuple]:
    """Scheduler.add with each request as the client sends it to the process: prepared once
    (StoryGenerator.prepare validates it the same way)."""
    return scheduler.add([(rid, request if request.prepared else request.validated(scheduler.vocab, scheduler.limits))
                          for rid, request in joining])


def tell_all(scheduler, requests) -> tuple[list[tuple], list[str]]:
    """Every request told to the end by a model.generator.Scheduler: for each, its "done" event's
    fields (text, times filtered, width) and the text it streamed."""
    errors = add(scheduler, list(enumerate(requests)))
    assert not errors, errors
    done, chunks = {}, {}
    while scheduler.active:
        for kind, rid, text, *rest in scheduler.advance():
            if kind == "chunk":
                chunks[rid] = chunks.get(rid, "") + text
            else:
                done[rid] = (text, *rest)
    return [done[i] for i in range(len(requests))], [chunks.get(i, "") for i in range(len(requests))]
