"""The Discord bot: cogs per feature, settings from the environment, SQLite storage.

Nothing here imports Keras or TensorFlow; stories come from the generator process."""
