"""The network: Embedding -> stacked GRU/LSTM -> Dense logits, in backend-neutral Keras 3.

The saved model is stateless and made of standard layers only, so `keras.saving.load_model`
reads it with no custom objects. Samplers carry the recurrent state themselves.
"""
import keras

CELLS = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}


def build_model(vocab_size: int, embedding: int = 300, units=(512, 256), cell: str = "gru",
                dropout: float = 0.0) -> keras.Model:
    """The seed recipe's architecture by default: Embedding(300) -> GRU(512) -> GRU(256) -> Dense."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}: choose one of {', '.join(CELLS)}")
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, embedding, name="embedding")(ids)
    for i, n in enumerate(units):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        x = CELLS[cell](n, return_sequences=True, name=f"{cell}_{i}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"dropout_{len(units)}")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(ids, logits, name="quill_char_rnn")
