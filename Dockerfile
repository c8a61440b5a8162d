FROM python:3.11-slim

# numba keeps the compiled story engine on the volume: only the first start compiles it.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    QUILL_DATABASE=/data/quill.db NUMBA_CACHE_DIR=/data/numba-cache TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app

# Dependencies first, so code changes do not reinstall TensorFlow.
COPY pyproject.toml README.md ./
COPY cli.py ./
COPY model/ model/
COPY train/ train/
COPY bot/ bot/
RUN pip install --no-cache-dir .

# The shipped model lives inside the image.
COPY models/default/ models/default/
ENV QUILL_MODEL=/app/models/default

RUN useradd --create-home --uid 10001 quill && mkdir /data && chown quill /data
USER quill
VOLUME ["/data"]

CMD ["quill", "run"]
