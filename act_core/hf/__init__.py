"""Transformers host: fit and apply maps on a causal language model from text.

::

    from act_core import hf
    model, tokenizer = hf.load_causal_lm("smollm2")
    maps = hf.fit_lm(model, tokenizer, source_texts, target_texts, sites="attn_out")
    with hf.steering(model, maps, strength=1.0):
        model.generate(...)

================  ===================================================================
``lm``            texts -> batched forward passes; fit, save, load, steer (re-exported here)
``presets``       site presets per model family and the model hint of a map file
``models``        loading a causal LM (the offline SmolLM2) and the model cache folder
``generate``      generation and perplexity with one or several map sets
``lineas``        LinEAS fitting from texts
``export``        maps folded into a checkpoint ``from_pretrained`` loads
``gguf_export``   maps as a llama.cpp control vector
``cli``           the ``act`` command
``data``          the text data sets and judges of the LLM benchmarks
================  ===================================================================

Transformers is imported lazily, inside the functions that need it.
"""

from act_core.hf.lm import *  # noqa: F403 - the host's functions, as hf.fit_lm etc.
from act_core.hf.lm import __all__  # noqa: F401
