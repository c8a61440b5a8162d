"""Every limit and default a member or moderator meets, in one place: the commands, the console, the
database layer and the benchmarks read them here. The database's CHECKs hold the same ranges; they
were written in released migrations, which never change, and a test keeps the two together."""
from __future__ import annotations

from typing import NamedTuple

# The model owns these (what a tale's memory and the word filter can hold); they are read from here.
from model.memory import ENTRY_CHARS, MAX_CAST  # noqa: F401  characters of a cast entry; entries a cast holds
from model.safety import MAX_WORD  # noqa: F401  characters of a word a server blocks


class Limit(NamedTuple):
    low: int | float
    high: int | float
    default: int | float | None = None

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"


STORY_LENGTH = Limit(100, 1900, 800)  # new characters a story or chapter asks for
TEMPERATURE = Limit(0.1, 2.0, 0.5)
COOLDOWN_SECONDS = Limit(0, 3600, 20)  # per member, between stories
REPORT_THRESHOLD = Limit(1, 100, 3)  # members' reports that hide a tale
REPORTS_PER_HOUR = 5  # new reports one member makes in a server in an hour
MAX_CHAPTERS = Limit(1, 50, 10)  # a tale's own text and its chapters
TOGETHER_LENGTH = Limit(100, 1000, 300)  # new characters after each line written together
START = Limit(1, 200)  # characters of a story's start
LINE = Limit(1, 300)  # characters of a member's line written together
TOGETHER_MAX_PARTS = 101  # the opening and 50 turns of a member's line and the bot's reply
GALLERY_PAGE = 5  # tales on a page of /gallery and of the web gallery
MAX_SERVER_WORDS = 500  # a server's own blocked words
SERVER_SHARE = 4  # a server may hold at most 1/4 of the storyteller (its rows and queue) at once
MEMBER_IN_FLIGHT = 2  # stories one member may have being written at once
WEB_SUMMARY = 200  # characters of a tale shown in its link's card, the web gallery and its feed
WEB_FEED_TALES = 20  # the newest tales in a web gallery's feed
WEB_ADDRESS_BYTES = 12  # random bytes of a web gallery's address: 16 characters, never guessed
