"""Console mode: the slash commands typed on stdin, answered on stdout, by the same cogs, stores
and SQLite file as on Discord, as one local member (with every permission) of one local server.

    /story start:Harry Potter length:600     /story start:Harry seed:7     /temperature 0.8
    press save | press 👍 | press again | press continue | press report
    /gallery sort:new     /tale 3     /tale export 3     /tale restore 3     /tale remove 3
    /story start:The Sorting Hat together:true     add <your line>     finish
    /cast list     /cast add Moaning Myrtle     /cast remove Peeves     /cast reset
    /filter list     /filter add <word>     /filter remove <word>     /settings cooldown:5
"""
from __future__ import annotations

import asyncio
import re
import sys
import threading

import discord
from discord import app_commands
from discord.utils import MISSING, maybe_coroutine

from bot.views import WRITING
from bot.errors import answer_error

HELP = __doc__.split("\n\n", 1)[1].rstrip() + "\n    help | quit"
TRUE, FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


class ConsoleError(ValueError):
    pass


class _Member:
    def __init__(self, id: int, name: str):
        self.id, self.name, self.display_name, self.bot = id, name, name, False
        self.mention = f"@{name}"  # as a terminal shows it; Discord would render <@id>
        self.guild_permissions = discord.Permissions.all()  # the local member owns the local server


class _Place:
    def __init__(self, id: int, name: str):
        self.id, self.name, self.mention = id, name, f"#{name}"  # not <#id>, which only Discord renders


class _Channel(_Place):
    """The console's one channel; a thread opened in it prints into the console too."""
    console: "Console | None" = None

    async def create_thread(self, *, name: str, **options) -> "_Thread":
        self.console.write(("\n" if self.console.streamed else "") + f"── thread: {name} ──\n")
        self.console.streamed = ""
        return _Thread(self.console, name)


class _Thread(_Place):
    def __init__(self, console: "Console", name: str):
        super().__init__(2, name)
        self.console = console

    async def send(self, content=None, *, embed=MISSING, view=MISSING, allowed_mentions=None) -> None:
        self.console.show(content, embed, view)


class Console:
    GUILD, CHANNEL, MEMBER = _Place(1, "console"), _Channel(1, "console"), _Member(1, "you")

    def __init__(self, bot, out=sys.stdout):
        self.bot, self.out = bot, out
        Console.CHANNEL.console = self
        self.last_view: discord.ui.View | None = None
        self.streamed = ""

    # -- output -----------------------------------------------------------------------------
    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def show(self, content=MISSING, embed=MISSING, view=MISSING, ephemeral: bool = False,
             streams: bool = True) -> None:
        """Print a message; `streams`: print a streamed tale as it grows, else only once it is done."""
        if content not in (MISSING, None):
            streaming = content.endswith(WRITING)
            body = plain(content.removesuffix(WRITING))
            if streaming and (body.startswith("\u23f3") or not streams):
                body = ""  # a place in the line, or a tale shown whole once done
            elif self.streamed and body.startswith(self.streamed):
                self.write(body[len(self.streamed):])  # streaming: print only what is new
            else:
                self.write(("\n" if self.streamed else "") + ("(only you see this) " if ephemeral else "") + body
                           + ("" if streaming else "\n"))
            self.streamed = body if streaming else ""
        if embed not in (MISSING, None):
            self.write(render_embed(embed, self.streamed))
            self.streamed = ""
        if view not in (MISSING, None):
            self.last_view = view
            labels = [f"[{button.label}]" + (" (off)" if button.disabled else "")
                      + (f" {button.url}" if button.url else "")  # a link, printed to be opened
                      for button in map(as_button, view.children) if button is not None]
            self.write("  ".join(labels) + "   (press <button>)\n")

    # -- input ------------------------------------------------------------------------------
    async def run(self, stdin=sys.stdin) -> None:
        lines = read_lines(stdin)
        interactive = stdin.isatty()
        self.write(f"Quill console: one member of one local server. Model: {self.bot.generator.info.get('model')}."
                   " Type help for commands.\n")
        if self.bot.web_server:
            self.write(f"The web gallery listens on {self.bot.settings.public_url}: /settings web:on publishes "
                       "this server's.\n")
        while True:
            if interactive:
                self.write("quill> ")
            line = await lines.get()
            if line is None:
                return
            line = line.strip()
            if line.lower() in ("quit", "exit", "/quit", "/exit"):
                return
            if line:
                await self.handle(line)

    async def handle(self, line: str) -> None:
        try:
            if line.lower() in ("help", "/help"):
                self.write(HELP + "\n")
            elif line.startswith("press "):
                await self.press(line[6:].strip())
            elif line.lower().startswith("add "):  # what the Add a line modal sends on Discord
                await self.add_line(line[4:].strip())
            elif line.lower() == "finish":
                await self.press("finish")
            elif line.startswith("/"):
                await self.invoke(line[1:])
            else:
                raise ConsoleError("commands start with / (try /story start:Harry); type help for more")
        except ConsoleError as e:
            self.write(f"error: {e}\n")

    async def invoke(self, text: str) -> None:
        name, _, rest = text.partition(" ")
        command = self.bot.tree.get_command(name.lower())
        if command is None:
            raise ConsoleError(f"unknown command /{name}; type help")
        if isinstance(command, app_commands.Group):
            sub, _, after = rest.strip().partition(" ")
            if command.get_command(sub) is not None:
                command, rest = command.get_command(sub), after
            else:  # "/tale 3" means "/tale show 3"
                command = command.get_command("show")
        options = self.parse(command, rest.strip())
        # An opening written together is shown whole in its thread, not streamed before the thread.
        interaction = ConsoleInteraction(self, command, streams=not options.get("together"))
        await invoke_command(self.bot, command, interaction, **options)

    async def add_line(self, text: str) -> None:
        item = find_button(self.last_view, "Add a line") if self.last_view else None
        if item is None:
            raise ConsoleError("no tale to add a line to: start one with /story start:... together:true")
        interaction = ConsoleInteraction(self, None, streams=False)  # the turn shows line and reply together
        try:
            await self.bot.writer.add_line(interaction, item.tale_id, text)
        except Exception as error:
            await answer_error(interaction, error)

    async def press(self, label: str) -> None:
        view = self.last_view
        wanted = {"vote": "👍"}.get(label.lower(), label.lower())
        item = find_button(view, wanted) if view else None
        if item is None:
            raise ConsoleError(f"no button {label!r} on the last message")
        if as_button(item).disabled:
            raise ConsoleError(f"the {as_button(item).label!r} button is switched off")
        if as_button(item).url:  # Discord opens a link button in the browser; the bot never hears of it
            self.write(f"open {as_button(item).url} in a browser\n")
            return
        await press_button(view, item, ConsoleInteraction(self, None))

    def parse(self, command: app_commands.Command, text: str) -> dict:
        params = {p.name: p for p in command.parameters}
        values: dict[str, str] = {}
        # Only this command's own option names start an option, so "Dear diary: today" stays text.
        option = re.compile(r"(?:^|\s)(" + "|".join(map(re.escape, params)) + r"):") if params else None
        pieces = option.split(text) if option else [text]  # ["lead", name, value, name, value, ...]
        unknown = [name for name in re.findall(r"(?:^|\s)([a-z_]+):(?=\S)", text) if name not in params]
        if unknown:  # an option as Discord spells one (name:value, no space): not text to keep
            raise ConsoleError(f"/{command.qualified_name} has no option {unknown[0]!r}"
                               + (f"; its options: {', '.join(params)}" if params else ""))
        lead = pieces[0].strip()
        if lead:  # text before any option goes to the first one: /temperature 0.8, /story Harry length:100
            if not params:
                raise ConsoleError(f"/{command.qualified_name} takes no options")
            values[command.parameters[0].name] = lead
        for name, value in zip(pieces[1::2], pieces[2::2]):
            if name in values:
                raise ConsoleError(f"{name} is given twice")
            values[name] = value.strip()
        missing = [p.name for p in command.parameters if p.required and p.name not in values]
        if missing:
            raise ConsoleError(f"/{command.qualified_name} needs {', '.join(missing)}")
        return {name: self.convert(params[name], raw) for name, raw in values.items()}

    def convert(self, param: app_commands.Parameter, raw: str):
        kind = param.type
        try:
            if kind is discord.AppCommandOptionType.integer:
                value = int(raw)
            elif kind is discord.AppCommandOptionType.number:
                value = float(raw)
            elif kind is discord.AppCommandOptionType.boolean:
                if raw.lower() not in TRUE | FALSE:
                    raise ValueError
                value = raw.lower() in TRUE
            elif kind is discord.AppCommandOptionType.user:
                if raw.lower() not in ("me", "you", self.MEMBER.mention):
                    raise ValueError
                value = self.MEMBER
            elif kind is discord.AppCommandOptionType.channel:
                if raw.lower().lstrip("#") not in ("console", "here"):
                    raise ValueError
                value = self.CHANNEL
            else:
                value = raw
        except ValueError:
            raise ConsoleError(f"{param.name}: {raw!r} is not a valid {kind.name}") from None
        if param.choices and value not in [c.value for c in param.choices]:
            raise ConsoleError(f"{param.name} must be one of {', '.join(str(c.value) for c in param.choices)}")
        size = len(value) if isinstance(value, str) else value
        what = "length" if isinstance(value, str) else "value"
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            if param.min_value is not None and size < param.min_value or \
                    param.max_value is not None and size > param.max_value:
                raise ConsoleError(f"{param.name}: {what} must be between {param.min_value} and {param.max_value}")
        return value


async def invoke_command(bot, command: app_commands.Command, interaction, **kwargs) -> None:
    """Run an app command's checks and callback as discord.py would, errors to tree.on_error."""
    try:
        for check in command.checks:
            if not await maybe_coroutine(check, interaction):
                raise app_commands.CheckFailure(f"the check for /{command.qualified_name} failed")
        await command.callback(command.binding, interaction, **kwargs)
    except Exception as error:
        await bot.tree.on_error(interaction, error)


def as_button(item) -> discord.ui.Button | None:
    """The button itself, also inside a DynamicItem."""
    item = getattr(item, "item", item)
    return item if isinstance(item, discord.ui.Button) else None


def find_button(view: discord.ui.View, label_start: str):
    """The button whose label, or its words after an emoji ("🚩 Report": "report"), starts so."""
    wanted = label_start.lower()

    def named(label: str) -> bool:
        return label.startswith(wanted) or re.sub(r"^\W+", "", label).startswith(wanted)
    return next((i for i in view.children if as_button(i) and named((as_button(i).label or "").lower())), None)


async def press_button(view: discord.ui.View, button, interaction) -> None:
    """Run a button as discord.py's view dispatch would: interaction_check, callback, on_error."""
    try:
        if await view.interaction_check(interaction):
            await button.callback(interaction)
    except Exception as error:
        await view.on_error(interaction, error, button)


def read_lines(stdin) -> asyncio.Queue:
    """Lines from stdin on a daemon thread (None at the end): a thread blocked in readline must not
    keep the program from exiting on Ctrl-C, as one in the default executor would."""
    loop, lines = asyncio.get_running_loop(), asyncio.Queue()

    def read() -> None:
        for line in iter(stdin.readline, ""):
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True, name="quill-console-input").start()
    return lines


def plain(text: str) -> str:
    """Discord's markdown as a terminal shows it: **bold** and `code` without their marks."""
    return text.replace("**", "").replace("`", "")


def render_embed(embed: discord.Embed, streamed: str = "") -> str:
    """The embed as text; a tale that was just streamed is not printed a second time."""
    lines = [] if streamed else [f"── {embed.title} ──" if embed.title else "──"]
    description = embed.description or ""
    if streamed and description.startswith(streamed):
        lines.append(description[len(streamed):].rstrip() or "")
    elif description:
        lines.append(("\n" if streamed else "") + plain(description))
    for field in embed.fields:
        lines.append(f"• {field.name}\n  " + field.value.replace("\n", "\n  "))
    if embed.footer and embed.footer.text:
        lines.append(f"({embed.footer.text})")
    return "\n".join(lines) + "\n"


class _Response:
    def __init__(self, console: Console):
        self.console, self.done = console, False

    def is_done(self) -> bool:
        return self.done

    async def defer(self, *, thinking: bool = False, ephemeral: bool = False) -> None:
        self.done = True

    async def send_message(self, content=None, *, embed=MISSING, view=MISSING, ephemeral=False,
                           allowed_mentions=None, file=MISSING) -> None:
        self.done = True
        self.console.show(content, embed, view, ephemeral)
        if file is not MISSING:  # an attachment is printed whole
            self.console.write(f"── {file.filename} ──\n{file.fp.read().decode('utf-8')}\n")

    async def edit_message(self, *, content=MISSING, embed=MISSING, view=MISSING, allowed_mentions=None) -> None:
        self.done = True
        self.console.show(content, embed, view)


class _Followup:
    def __init__(self, console: Console):
        self.console = console

    async def send(self, content=None, *, embed=MISSING, view=MISSING, ephemeral=False,
                   allowed_mentions=None) -> None:
        self.console.show(content, embed, view, ephemeral)


class ConsoleInteraction:
    """What the cogs use of discord.Interaction, printed instead of sent."""

    def __init__(self, console: Console, command, streams: bool = True):
        self.client, self.command, self._streams = console.bot, command, streams
        self.user, self.guild, self.channel = Console.MEMBER, Console.GUILD, Console.CHANNEL
        self.guild_id, self.channel_id = Console.GUILD.id, Console.CHANNEL.id
        self.permissions = discord.Permissions.all()  # the local member owns the local server
        self.response, self.followup = _Response(console), _Followup(console)
        self._console = console

    async def edit_original_response(self, *, content=MISSING, embed=MISSING, view=MISSING,
                                     allowed_mentions=None) -> None:
        self._console.show(content, embed, view, streams=self._streams)

    async def delete_original_response(self) -> None:
        if self._console.streamed:
            self._console.write("\n")
            self._console.streamed = ""


async def run_console(bot, stdin=sys.stdin, out=sys.stdout) -> None:
    async with bot:  # set up as discord.py does before connecting; closed however the console ends
        await bot.prepare()
        # One member trying stories out one after another: no cooldown, until /settings sets one.
        await bot.guild_settings.update(Console.GUILD.id, only_if_new=True, cooldown_seconds=0)
        await Console(bot, out).run(stdin)
