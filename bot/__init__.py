"""The Discord bot: cogs per feature, settings from the environment, storage in SQLite
or PostgreSQL (bot/db.py).

Nothing here imports Keras or TensorFlow; stories come from the generator process."""
