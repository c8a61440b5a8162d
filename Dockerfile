# The runtime image: tells stories with numba from the shipped model, no TensorFlow or Keras.
FROM python:3.11-slim

# The metrics listen on the container's own network (Prometheus in compose scrapes them there);
# publishing the port is the operator's choice. So does the web gallery, once QUILL_WEB_PORT=8080
# turns it on, for the operator's reverse proxy (QUILL_PUBLIC_URL: the address members are shown).
# numba's compiled story engine is built into the image (see the warm-up below); a machine with
# another CPU recompiles it once, into the same folder, which the bot's user owns.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    QUILL_DATABASE=/data/quill.db NUMBA_CACHE_DIR=/app/numba-cache QUILL_METRICS_PORT=9100 \
    QUILL_METRICS_HOST=0.0.0.0 QUILL_WEB_HOST=0.0.0.0
WORKDIR /app

# Dependencies first, in their own layer: a code change does not reinstall them. The list is
# pyproject.toml's own (the runtime dependencies only), pinned by constraints.txt.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/runtime.txt \
    && pip install --no-cache-dir --constraint constraints.txt --requirement /tmp/runtime.txt

COPY README.md cli.py ./
COPY model/ model/
COPY bot/ bot/
# The package carries the shipped model (pyproject's data-files), so the copy in /app goes.
COPY models/default/ models/default/
RUN pip install --no-cache-dir --no-deps . && rm -rf models

# Compile the story engine now, so the first start does not spend ~15 s doing it.
RUN useradd --create-home --uid 10001 quill && mkdir /data /app/numba-cache \
    && quill story "Harry" --length 40 --seed 1 > /dev/null \
    && chown -R quill /data /app/numba-cache
USER quill
VOLUME ["/data"]
EXPOSE 9100 8080

# /healthz answers 200 only while every shard of this process is connected and its generator is ready.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD python -c \
    "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['QUILL_METRICS_PORT'], timeout=4)"

CMD ["quill", "run"]
