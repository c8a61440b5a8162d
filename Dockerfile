FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    QUILL_DATABASE=/data/quill.db TF_CPP_MIN_LOG_LEVEL=2
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
