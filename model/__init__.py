"""Network, vocabulary, bundle format and sampler of Quill's character-level RNN.

Modules are imported one by one on purpose: the Discord process uses the vocabulary and
the generator client without importing Keras or TensorFlow.
"""
