"""A small local stand-in for Discord, REST and gateway, that the real discord.py client and
QuillBot talk to, checking every request against Discord's documented limits.

It answers what the bot uses: login, the gateway (HELLO, IDENTIFY -> READY and GUILD_CREATE,
RESUME -> RESUMED), command sync, interaction callbacks, and the interaction webhook (edit,
follow-up, delete). Each request that breaks a rule is recorded in `violations`. Faults can be
injected: a 429 or a 500 on the next edits, slow edits, a dropped gateway connection.

What it cannot check: Discord's real rate-limit buckets beyond the per-message edit limit,
markdown rendering, permission overwrites, client-side display of components, and anything
about real network conditions beyond the delays it injects.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import defaultdict, deque

from aiohttp import WSMsgType, web

APP_ID, BOT_ID = 900, 901
EPOCH = "2026-01-01T00:00:00+00:00"
MANAGE_GUILD, MANAGE_MESSAGES = 1 << 5, 1 << 13

# Discord's documented limits (https://discord.com/developers/docs/resources/message,
# .../interactions/receiving-and-responding, .../topics/rate-limits).
CONTENT, EMBED_TITLE, EMBED_DESCRIPTION, EMBED_FOOTER, EMBED_TOTAL = 2000, 256, 4096, 2048, 6000
FIELD_NAME, FIELD_VALUE, FIELDS, ROWS, PER_ROW, CUSTOM_ID, LABEL = 256, 1024, 25, 5, 5, 100, 80
URL, LINK_STYLE = 512, 5  # a link button: a URL Discord opens, no custom_id (it never reaches the bot)
CALLBACK_DEADLINE = 3.0
EDITS_PER_WINDOW, EDIT_WINDOW = 5, 5.0


def reply(data, status: int = 200, headers: dict | None = None) -> web.Response:
    """JSON as Discord sends it: discord.py reads a body as JSON only for exactly this content type."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def user(user_id: int, name: str, bot: bool = False) -> dict:
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
            "bot": bot, "public_flags": 0}


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's rule: a server's events go to shard (guild_id >> 22) % shard_count."""
    return (guild_id >> 22) % shard_count


class FakeDiscord:
    def __init__(self, shard_count: int = 1):
        self.shard_count = shard_count
        self.sockets: dict[int, web.WebSocketResponse] = {}  # shard id -> its gateway connection
        self.syncs = 0
        self.violations: list[str] = []
        self.requests: list[tuple[str, str, dict | None]] = []
        self.guilds: dict[int, str] = {}
        self.messages: dict[str, dict] = {}  # webhook token -> the @original message
        self.followups: dict[str, list[dict]] = defaultdict(list)
        self.callbacks: dict[int, dict] = {}  # interaction id -> the callback payload
        self.dispatched: dict[int, float] = {}  # interaction id -> when it was sent to the bot
        self.edit_times: dict[str, deque] = defaultdict(deque)
        self.rate_limited = 0
        self.fail_next = {"429": 0, "500": 0}
        self.retry_after = 0.3  # what an injected 429 asks for
        self.limited_until: dict[str, float] = {}  # token -> when its 429's retry_after ends
        self.edit_delay = 0.0
        self.commands: list[dict] = []
        self.resumed = asyncio.Event()
        self.identified = asyncio.Event()
        self.identify: dict | None = None  # the bot's IDENTIFY payload
        self._ids = itertools.count(10_000)
        self._sequence = itertools.count(1)
        self.app = web.Application()
        self.app.add_routes([
            web.get("/gateway", self.gateway),
            web.get("/api/v10/users/@me", self.me),
            web.get("/api/v10/oauth2/applications/@me", self.application),
            web.get("/api/v10/gateway/bot", self.gateway_bot),
            web.get("/api/v10/gateway", self.gateway_bot),
            web.put("/api/v10/applications/{app}/commands", self.sync),
            web.put("/api/v10/applications/{app}/guilds/{guild}/commands", self.sync),
            web.post("/api/v10/interactions/{id}/{token}/callback", self.callback),
            web.patch("/api/v10/webhooks/{app}/{token}/messages/@original", self.edit_original),
            web.delete("/api/v10/webhooks/{app}/{token}/messages/@original", self.delete_original),
            web.post("/api/v10/webhooks/{app}/{token}", self.followup),
        ])

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> str:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)  # loopback only
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()

    def violation(self, text: str) -> None:
        self.violations.append(text)

    # -- REST: login and sync -----------------------------------------------------------------
    async def me(self, request):
        return reply({**user(BOT_ID, "Quill", bot=True), "verified": True, "mfa_enabled": False,
                                  "flags": 0})

    async def application(self, request):
        return reply({"id": str(APP_ID), "name": "Quill", "description": "", "icon": None,
                                  "bot_public": True, "bot_require_code_grant": False, "verify_key": "k",
                                  "owner": user(1, "owner"), "flags": 0, "team": None,
                                  "interactions_endpoint_url": None})

    async def gateway_bot(self, request):
        return reply({"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": self.shard_count,
                                  "session_start_limit": {"total": 1000, "remaining": 999,
                                                          "reset_after": 0, "max_concurrency": 1}})

    async def sync(self, request):
        payload = await request.json()
        self.syncs += 1
        self.commands = [{**c, "id": str(next(self._ids)), "application_id": str(APP_ID), "version": "1"}
                         for c in payload]
        return reply(self.commands)

    # -- REST: interactions -------------------------------------------------------------------
    async def callback(self, request):
        interaction_id = int(request.match_info["id"])
        payload = await request.json()
        self.requests.append(("callback", request.match_info["token"], payload))
        if interaction_id in self.callbacks:
            self.violation(f"interaction {interaction_id} answered twice")
            return reply({"message": "Interaction has already been acknowledged.", "code": 40060},
                                     status=400)
        late = time.monotonic() - self.dispatched.get(interaction_id, time.monotonic())
        if late > CALLBACK_DEADLINE:
            self.violation(f"interaction {interaction_id} answered after {late:.1f} s")
        self.callbacks[interaction_id] = payload
        data = payload.get("data") or {}
        if payload.get("type") in (4, 7):
            self.check_message(data, f"callback type {payload['type']}")
        token = request.match_info["token"]
        if payload.get("type") == 4:
            self.messages[token] = self.message(data)
        elif payload.get("type") == 7 and token in self.messages:
            self.messages[token].update({k: v for k, v in data.items() if k in ("content", "embeds", "components")})
        return reply({"interaction": {"id": str(interaction_id), "type": payload.get("type"),
                                                  "response_message_loading": payload.get("type") == 5,
                                                  "response_message_ephemeral": bool(data.get("flags", 0) & 64)}})

    async def edit_original(self, request):
        token = request.match_info["token"]
        payload = await request.json()
        self.requests.append(("edit", token, payload))
        early = self.limited_until.get(token, 0) - time.monotonic()
        if early > 0.01:  # real Discord answers with another 429; repeated ones earn a temporary ban
            self.violations.append(f"edit of {token} sent {early:.2f} s before its 429's retry_after ended")
        if self.fail_next["500"]:
            self.fail_next["500"] -= 1
            return reply({"message": "Internal Server Error", "code": 0}, status=500)
        now = time.monotonic()
        times = self.edit_times[token]
        while times and now - times[0] > EDIT_WINDOW:
            times.popleft()
        if self.fail_next["429"] or len(times) >= EDITS_PER_WINDOW:
            self.rate_limited += 1
            retry = self.retry_after if self.fail_next["429"] else max(0.05, EDIT_WINDOW - (now - times[0]))
            self.limited_until[token] = now + retry
            self.fail_next["429"] = max(0, self.fail_next["429"] - 1)
            return reply({"message": "You are being rate limited.", "retry_after": retry,
                                      "global": False}, status=429,
                                     headers={"Via": "1.1 google", "Retry-After": str(retry),
                                              "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                              "X-RateLimit-Reset-After": str(retry),
                                              "X-RateLimit-Bucket": "edits", "X-RateLimit-Scope": "shared"})
        times.append(now)
        if self.edit_delay:
            await asyncio.sleep(self.edit_delay)
        if not self.check_message(payload, "edit"):
            return reply({"message": "Invalid Form Body", "code": 50035}, status=400)
        message = self.messages.setdefault(token, self.message({}))
        message.update({k: v for k, v in payload.items() if k in ("content", "embeds", "components")})
        message["edited_timestamp"] = EPOCH
        return reply(message)

    async def delete_original(self, request):
        self.requests.append(("delete", request.match_info["token"], None))
        self.messages.pop(request.match_info["token"], None)
        return web.Response(status=204)

    async def followup(self, request):
        token = request.match_info["token"]
        payload = await request.json()
        self.requests.append(("followup", token, payload))
        if not self.check_message(payload, "follow-up"):
            return reply({"message": "Invalid Form Body", "code": 50035}, status=400)
        message = self.message(payload)
        self.followups[token].append(message)
        return reply(message)

    def message(self, data: dict) -> dict:
        return {"id": str(next(self._ids)), "channel_id": "100", "author": user(BOT_ID, "Quill", bot=True),
                "content": data.get("content") or "", "timestamp": EPOCH, "edited_timestamp": None, "tts": False,
                "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
                "embeds": data.get("embeds") or [], "components": data.get("components") or [], "pinned": False,
                "type": 0, "flags": data.get("flags", 0)}

    # -- the rules ------------------------------------------------------------------------------
    def check_message(self, payload: dict, where: str) -> bool:
        before = len(self.violations)
        content = payload.get("content")
        if content is not None and len(content) > CONTENT:
            self.violation(f"{where}: content of {len(content)} characters")
        if ("content" in payload or "embeds" in payload) and "allowed_mentions" not in payload:
            self.violation(f"{where}: no allowed_mentions")
        for embed in payload.get("embeds") or []:
            title, description = embed.get("title") or "", embed.get("description") or ""
            footer = (embed.get("footer") or {}).get("text") or ""
            fields = embed.get("fields") or []
            total = len(title) + len(description) + len(footer) + sum(
                len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
            for what, size, limit in (("title", len(title), EMBED_TITLE),
                                      ("description", len(description), EMBED_DESCRIPTION),
                                      ("footer", len(footer), EMBED_FOOTER), ("in all", total, EMBED_TOTAL),
                                      ("fields", len(fields), FIELDS)):
                if size > limit:
                    self.violation(f"{where}: embed {what} of {size}")
            for f in fields:
                if len(f.get("name", "")) > FIELD_NAME or len(f.get("value", "")) > FIELD_VALUE:
                    self.violation(f"{where}: embed field too long")
        rows = payload.get("components") or []
        if len(rows) > ROWS:
            self.violation(f"{where}: {len(rows)} action rows")
        for row in rows:
            if row.get("type") != 1 or len(row.get("components", [])) > PER_ROW:
                self.violation(f"{where}: bad action row {row}")
            for item in row.get("components", []):
                if len(item.get("custom_id", "")) > CUSTOM_ID:
                    self.violation(f"{where}: custom_id of {len(item['custom_id'])}")
                if item.get("type") == 2:
                    self.check_button(item, where)
                if len(item.get("label") or "") > LABEL:
                    self.violation(f"{where}: label of {len(item['label'])}")
                for flag in ("disabled",):
                    if flag in item and not isinstance(item[flag], bool):
                        self.violation(f"{where}: {flag} is {item[flag]!r}, not a boolean")
        return len(self.violations) == before

    def check_button(self, button: dict, where: str) -> None:
        """A link button has a valid http(s) URL of at most 512 characters and no custom_id; any
        other button has a custom_id and no URL."""
        if button.get("style") == LINK_STYLE:
            url = button.get("url") or ""
            if "custom_id" in button:
                self.violation(f"{where}: a link button with a custom_id")
            if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url) or len(url) > URL:
                self.violation(f"{where}: link button URL {url[:100]!r} ({len(url)} characters)")
        elif "url" in button or not button.get("custom_id"):
            self.violation(f"{where}: button {button.get('label')!r} of style {button.get('style')} needs a "
                           f"custom_id and no URL")

    # -- the gateway ----------------------------------------------------------------------------
    async def gateway(self, request):
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"op": 10, "d": {"heartbeat_interval": 45_000}, "s": None, "t": None})
        shard = None
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            if frame["op"] == 1:  # heartbeat
                await socket.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif frame["op"] == 2:  # identify
                self.identify = frame["d"]
                shard, count = frame["d"].get("shard", [0, 1])
                if count != self.shard_count:
                    self.violation(f"IDENTIFY with {count} shards; Discord said {self.shard_count}")
                self.sockets[shard] = socket
                mine = [g for g in self.guilds if shard_of(g, self.shard_count) == shard]
                await self.dispatch("READY", {
                    "v": 10, "user": {**user(BOT_ID, "Quill", bot=True), "verified": True, "flags": 0},
                    "guilds": [{"id": str(g), "unavailable": True} for g in mine],
                    "session_id": f"session{shard}", "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                    "application": {"id": str(APP_ID), "flags": 0}, "shard": [shard, self.shard_count]}, shard)
                for guild_id in mine:
                    await self.dispatch("GUILD_CREATE", self.guild(guild_id, self.guilds[guild_id]), shard)
                self.identified.set()
            elif frame["op"] == 6:  # resume
                shard = int(frame["d"]["session_id"].removeprefix("session"))
                self.sockets[shard] = socket
                await self.dispatch("RESUMED", {}, shard)
                self.resumed.set()
        if shard is not None and self.sockets.get(shard) is socket:
            del self.sockets[shard]  # the bot (or its process) went away
        return socket

    async def dispatch(self, event: str, data: dict, shard: int = 0) -> None:
        await self.sockets[shard].send_json({"op": 0, "t": event, "s": next(self._sequence), "d": data})

    async def drop_gateway(self, shard: int = 0) -> None:
        """Close the connection as Discord does when it wants a reconnect (4000: resumable)."""
        self.resumed.clear()
        await self.sockets[shard].close(code=4000, message=b"reconnect")

    def guild(self, guild_id: int, name: str) -> dict:
        return {"id": str(guild_id), "name": name, "icon": None, "owner_id": "1", "afk_timeout": 300,
                "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
                "mfa_level": 0, "premium_tier": 0, "nsfw_level": 0, "preferred_locale": "en-US", "features": [],
                "roles": [{"id": str(guild_id), "name": "@everyone", "permissions": "0", "position": 0,
                           "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
                "channels": [{"id": "100", "type": 0, "name": "general", "position": 0, "guild_id": str(guild_id),
                              "permission_overwrites": [], "nsfw": False, "parent_id": None}],
                "members": [], "emojis": [], "stickers": [], "threads": [], "member_count": 3, "large": False,
                "unavailable": False, "joined_at": EPOCH}

    # -- what members do ------------------------------------------------------------------------
    async def interact(self, guild_id: int, user_id: int, *, command: str | None = None, options: dict | None = None,
                       custom_id: str | None = None, message: dict | None = None, permissions: int = 0) -> str:
        """Send an INTERACTION_CREATE: a slash command, or a button press on `message`.
        Returns the interaction's webhook token."""
        interaction_id, token = next(self._ids), f"token{next(self._ids)}"
        payload = {"id": str(interaction_id), "application_id": str(APP_ID), "token": token, "version": 1,
                   "guild_id": str(guild_id), "channel_id": "100",
                   "channel": {"id": "100", "type": 0, "guild_id": str(guild_id), "name": "general"},
                   "member": {"user": user(user_id, f"member{user_id}"), "roles": [], "joined_at": EPOCH,
                              "deaf": False, "mute": False, "flags": 0, "permissions": str(permissions)},
                   "app_permissions": str(MANAGE_MESSAGES), "locale": "en-US", "guild_locale": "en-US",
                   "entitlements": [], "authorizing_integration_owners": {"0": str(guild_id)}, "context": 0,
                   "attachment_size_limit": 8 * 2**20}
        if command is not None:
            group, _, sub = command.partition(" ")
            known = next(c for c in self.commands if c["name"] == group)
            values = [{"name": k, "type": 4 if isinstance(v, int) else 10 if isinstance(v, float) else 3,
                       "value": v} for k, v in (options or {}).items()]
            if sub:
                values = [{"name": sub, "type": 1, "options": values}]
            payload.update(type=2, data={"id": known["id"], "name": group, "type": 1, "options": values})
        else:
            payload.update(type=3, data={"custom_id": custom_id, "component_type": 2}, message=message)
        self.dispatched[interaction_id] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload, shard_of(guild_id, self.shard_count))
        return token


# -- waiting for the bot's answers (conditions, not fixed sleeps) ---------------------------------
async def answered(fake, token, timeout=30.0) -> dict:
    """The interaction's final message: a tale's embed, or a private answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = fake.messages.get(token)
        if message and message["embeds"] and "✍️" not in (message["content"] or ""):
            return message
        if fake.followups.get(token):
            return fake.followups[token][-1]
        for kind, t, payload in fake.requests:
            if kind == "callback" and t == token and payload.get("type") == 4:  # answered at once (a refusal)
                return payload["data"]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no answer for {token}")


async def callback(fake, token, timeout=30.0) -> dict:
    """The interaction's callback payload, once it has come (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind, t, payload in fake.requests:
            if kind == "callback" and t == token:
                return payload
        await asyncio.sleep(0.02)
    raise AssertionError(f"no callback for {token}")
