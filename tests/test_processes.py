"""A bot of two processes, one shard each, sharing one PostgreSQL, against the fake Discord
(tests/fake_discord.py): concurrent stories, votes, reports and Continue on both shards, then one
process killed with SIGKILL while stories wait for it, and started again. Each process is `quill run` with the
environment compose.yaml gives its shards (tests/test_layout.py checks that they agree)."""
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.db import Database, GalleryStore, GuildSettingsStore
from tools.local_postgres import free_port
from tests.fake_discord import FakeDiscord, answered, callback, shard_of

SHARDS = 2
# Discord sends a server's events to shard (id >> 22) % count: one server on each shard.
GUILD_ON = {0: 2 << 22, 1: 1 << 22}
NAMES = ("Harry", "Ron", "Hermione", "Snape", "Dumbledore", "Harry looked")
QUILL = Path(sys.executable).with_name("quill")  # the installed console script, as compose runs it
# The shipped model, one story at a time (QUILL_MAX_BATCH=1).
ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default"


def shard_environment(shard: int, database: str, metrics_port: int) -> dict[str, str]:
    """What a shard's process is given, besides the token and where Discord is."""
    return {"QUILL_DATABASE": database, "QUILL_SHARD_COUNT": str(SHARDS), "QUILL_SHARDS": str(shard),
            "QUILL_METRICS_PORT": str(metrics_port)}


class BotProcess:
    """`quill run` in its own process group, with `env` as its whole environment."""

    def __init__(self, name: str, env: dict[str, str], logs: Path):
        self.name, self.env, self.port = name, env, int(env["QUILL_METRICS_PORT"])
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([str(QUILL), "run"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.log.parent, start_new_session=True)

    def generator(self) -> int:
        """The pid of this shard's generator process (multiprocessing's spawned child)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return next(int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the bot and its generator, at once
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{self.port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status, await r.text()
        except aiohttp.ClientError:
            return 0, ""

    async def healthy(self, timeout: float = 180) -> None:
        """/healthz answers 200: its shard is connected and its generator ready."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            if (await self.get("/healthz"))[0] == 200:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} never became healthy:\n{self.log.read_text()[-3000:]}")


def shard_process(shard: int, database: str, api: str, logs: Path) -> BotProcess:
    env = {**os.environ, **shard_environment(shard, database, free_port()), "DISCORD_TOKEN": "fake",
           "QUILL_DISCORD_API": api, "QUILL_MODEL": str(MODEL), "QUILL_MAX_BATCH": "1", "QUILL_STORY_TIMEOUT": "120"}
    return BotProcess(f"shard{shard}", env, logs)


def tale_footer(message: dict | None) -> bool:
    """Whether a message shows a stored tale (its footer names the tale's number)."""
    return bool(message and message.get("embeds") and "tale #" in message["embeds"][0].get("footer", {}).get("text", ""))


def tale_number(message: dict) -> int:
    return int(message["embeds"][0]["footer"]["text"].split("tale #")[1].split()[0])


def buttons(message: dict) -> dict[str, dict]:
    return {b["label"]: b for row in message["components"] for b in row["components"]}


@pytest.mark.slow
async def test_two_shard_processes_share_postgresql_and_survive_a_kill(postgres_server, tmp_path):
    url = postgres_server.new_database()
    fake = FakeDiscord(shard_count=SHARDS)
    fake.guilds = {GUILD_ON[0]: "Hogwarts", GUILD_ON[1]: "Durmstrang"}
    assert {shard_of(g, SHARDS) for g in fake.guilds} == {0, 1}
    api = await fake.start() + "/api/v10"
    processes = [shard_process(shard, url, api, tmp_path) for shard in range(SHARDS)]
    db = None
    try:
        for p in processes:
            p.start()
        await asyncio.gather(*(p.healthy() for p in processes))
        assert fake.syncs == 1  # one process synced the commands; the database told the other
        db = await Database.open(url)
        gallery, settings = GalleryStore(db), GuildSettingsStore(db)
        for guild in fake.guilds:
            await settings.update(guild, cooldown_seconds=0, report_threshold=2)  # read at once by both

        async def story(guild: int, member: int, start: str, length: int = 300) -> dict:
            token = await fake.interact(guild, member, command="story", options={"start": start, "length": length})
            return await answered(fake, token, timeout=120)

        # Both shards at once: stories, then votes, reports and Continue on each server's first tale.
        told = await asyncio.gather(*(story(GUILD_ON[shard], 10 + i, name) for shard in range(SHARDS)
                                      for i, name in enumerate(NAMES[:4])))
        confirmed = {(GUILD_ON[shard], tale_number(m)) for shard, m in zip([0] * 4 + [1] * 4, told)}
        assert len(confirmed) == 8
        firsts = {shard: told[4 * shard] for shard in range(SHARDS)}
        votes, others = [], []
        for shard, message in firsts.items():
            guild, labels = GUILD_ON[shard], buttons(message)
            votes += [fake.interact(guild, 100 + m, custom_id=labels["👍 0"]["custom_id"], message=message)
                      for m in range(5)]
            others += [fake.interact(guild, 200 + m, custom_id=labels["\U0001f6a9 Report"]["custom_id"],
                                     message=message) for m in range(2)]
            others += [fake.interact(guild, 300 + m, custom_id=labels["Continue"]["custom_id"], message=message)
                       for m in range(2)]
        votes, others = await asyncio.gather(*votes), await asyncio.gather(*others)
        await asyncio.gather(*(callback(fake, t, timeout=120) for t in votes),  # the message itself is updated
                             *(answered(fake, t, timeout=120) for t in others))
        for shard, message in firsts.items():
            tale = await gallery.get(GUILD_ON[shard], tale_number(message))
            assert (tale.votes, tale.hidden, tale.chapters) == (5, True, 3)

        # Shard 1's process is killed with stories asked for and not yet told; shard 0 goes on writing
        # meanwhile. Its generator is held (SIGSTOP) once the first is told, so the kill finds the
        # rest waiting however fast the generator writes.
        first = await story(GUILD_ON[1], 40, NAMES[0], 1900)
        confirmed.add((GUILD_ON[1], tale_number(first)))
        os.kill(processes[1].generator(), signal.SIGSTOP)
        doomed = [await fake.interact(GUILD_ON[1], 41 + i, command="story", options={"start": name, "length": 1900})
                  for i, name in enumerate(NAMES)]
        await asyncio.gather(*(callback(fake, t, timeout=120) for t in doomed))  # deferred: the bot has them
        during = [asyncio.ensure_future(story(GUILD_ON[0], 50 + i, name, 1000)) for i, name in enumerate(NAMES[:3])]
        processes[1].kill()
        assert not [token for token in doomed if tale_footer(fake.messages.get(token))]  # none was told
        for message in await asyncio.gather(*during):  # the other process is unaffected
            confirmed.add((GUILD_ON[0], tale_number(message)))

        processes[1].start()
        await processes[1].healthy()
        again = await story(GUILD_ON[1], 60, "Hermione")
        confirmed.add((GUILD_ON[1], tale_number(again)))
        second = told[5]  # written on shard 1 before the kill (the first is hidden by its reports)
        onward = await fake.interact(GUILD_ON[1], 61, custom_id=buttons(second)["Continue"]["custom_id"],
                                     message=second)
        assert "chapter 2" in (await answered(fake, onward, timeout=120))["embeds"][0]["title"]

        # Nothing confirmed was lost, nothing is twice, and every tale's chapters run without a gap.
        rows = await db.fetchall("SELECT guild_id, id FROM tales")
        stored = [(r["guild_id"], r["id"]) for r in rows]
        assert len(stored) == len(set(stored))
        assert confirmed <= set(stored)
        for guild, tale_id in stored:
            numbers = [c.number for c in await gallery.chapters(guild, tale_id)]
            assert numbers == list(range(2, 2 + len(numbers)))
        status, metrics = await processes[0].get("/metrics")
        assert status == 200 and "quill_stories_finished_total" in metrics
        assert fake.violations == []
        summary = {"tales_stored": len(stored), "tales_confirmed": len(confirmed),
                   "stories_cut_off_by_the_kill": len(doomed), "syncs": fake.syncs,
                   "shard0_metrics": {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                                      if line.startswith(("quill_stories_started_total",
                                                          "quill_stories_finished_total"))}}
        print("multi-process:", json.dumps(summary))
    finally:
        for p in processes:
            p.stop()
        if db is not None:
            await db.close()
        await fake.close()


def image_environment(data: Path, app: Path) -> dict[str, str]:
    """The Dockerfile's ENV, its /data and /app folders moved to `data` and `app` on this machine."""
    lines = iter((ROOT / "Dockerfile").read_text().splitlines())
    instruction = next(line for line in lines if line.startswith("ENV "))
    while instruction.endswith("\\"):
        instruction = instruction[:-1] + next(lines)
    pairs = (word.split("=", 1) for word in shlex.split(instruction)[1:])
    return {k: v.replace("/data", str(data)).replace("/app", str(app)) for k, v in pairs}


def env_file(path: Path) -> dict[str, str]:
    """What `docker run --env-file` reads: KEY=VALUE lines as written; comments and blanks skipped."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.mark.slow
async def test_the_readme_docker_settings_with_the_example_env_run_healthy(tmp_path):
    """README: `cp .env.example .env`, then `docker run --env-file .env` on the image. Here: the
    image's ENV, the example file over it as --env-file puts it, a token and the fake Discord."""
    fake = FakeDiscord()
    fake.guilds = {GUILD_ON[0]: "Hogwarts"}
    api = await fake.start() + "/api/v10"
    data, app = tmp_path / "data", tmp_path / "app"
    data.mkdir()
    env = {**image_environment(data, app), **env_file(ROOT / ".env.example")}
    assert env["QUILL_METRICS_PORT"] == "9100" and env["QUILL_DATABASE"] == str(data / "quill.db")
    env.update(QUILL_METRICS_PORT=str(free_port()),  # the image's 9100, as a port free on this machine
               DISCORD_TOKEN="fake", QUILL_DISCORD_API=api, PATH=os.environ["PATH"], HOME=str(tmp_path))
    bot = BotProcess("image", env, tmp_path)
    try:
        bot.start()
        await bot.healthy()
        token = await fake.interact(GUILD_ON[0], 1, command="story", options={"start": "Harry", "length": 100})
        assert tale_footer(await answered(fake, token, timeout=120))
        assert (data / "quill.db").exists()  # the database is on the volume
        assert fake.violations == []
    finally:
        bot.stop()
        await fake.close()


def test_settings_read_the_database_url_shards_and_metrics_port():

    from bot.settings import Settings, SettingsError

    read = Settings.from_env({"QUILL_DATABASE": "postgresql://quill:secret@db.example/quill", "QUILL_SHARD_COUNT": "4",
                              "QUILL_SHARDS": "0-1,3", "QUILL_METRICS_PORT": "9100"}, dotenv=False)
    assert read.database == "postgresql://quill:secret@db.example/quill"  # not a path: the // stays
    assert (read.shard_count, read.shard_ids, read.metrics_port) == (4, (0, 1, 3), 9100)
    assert Settings.from_env({}, dotenv=False).shard_ids is None
    for env, message in [({"QUILL_SHARDS": "1"}, "needs QUILL_SHARD_COUNT"),
                         ({"QUILL_SHARD_COUNT": "2", "QUILL_SHARDS": "2"}, "from 0 to 1"),
                         ({"QUILL_SHARD_COUNT": "2", "QUILL_SHARDS": "one"}, "shard numbers such as"),
                         ({"QUILL_SHARD_COUNT": "2", "QUILL_SHARDS": "1-0"}, "shard numbers such as"),
                         ({"QUILL_METRICS_PORT": "70000"}, "a port number"),
                         ({"QUILL_SHARD_COUNT": "two"}, "QUILL_SHARD_COUNT must be a whole number")]:
        with pytest.raises(SettingsError, match=message):
            Settings.from_env(env, dotenv=False)


def test_a_machine_without_postgresql_is_told_how_to_install_it(monkeypatch):

    from tools import local_postgres

    monkeypatch.setenv("QUILL_PG_BIN", "/nowhere")
    monkeypatch.setattr(local_postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(local_postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(local_postgres.PostgresMissing, match="apt-get install postgresql"):
        local_postgres.LocalPostgres()
