"""The language model engine: load a causal LM and run its two operations, sample and score, fast.

Rule: the engine knows tokens, tensors and devices, never dialogues. It imports the shared vocabulary at the package
root (errors, settings, config) and nothing from ``method``, ``fleet`` or ``bench``. Its public face is
:class:`labelling.engine.lm.LanguageModel` with the request types of :mod:`labelling.engine.generation`; the other
modules are its parts (the KV cache, the eager and static decode loops, the counters (``stats``), prompt-lookup
guesses, sampling maths, loading, memory budgets, attention, linear layers, the offline model files).
"""
