"""The Discord HTTP counters, through the aiohttp trace discord.py is given (bot/metrics.py).
The bot's own metrics and /healthz are tested with the bot (tests/test_bot.py)."""
import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tools.local_postgres import free_port
from bot.metrics import Metrics


async def test_discord_http_errors_and_429s_are_counted():
    answers = iter([429, 500, 200, 404])
    app = web.Application()

    async def answer(request):
        return web.Response(status=next(answers))

    app.router.add_get("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    metrics = Metrics()
    try:
        async with aiohttp.ClientSession(trace_configs=[metrics.http_trace()]) as session:
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{port}/"):
                    pass
    finally:
        await runner.cleanup()
    counted = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}
    assert counted[("quill_discord_rate_limits_total", ())] == 1
    assert {labels: v for (name, labels), v in counted.items() if name == "quill_discord_http_errors_total"} == {
        (("status", "429"),): 1, (("status", "500"),): 1, (("status", "404"),): 1}
