"""Quill's character-level GRU and everything that writes with it: the vocabulary and bundle
format, the engines and sampler, the generator process and its client, the tale's memory, the
sentence critic and the word filter.

Training (train/) and the GPU's device engine use Keras; on a CPU the bot and its generator
process run without it (the numba engine reads the bundle's weights with h5py).
"""
