"""Benchmarks a user can run: the plain against the optimised engine (``speed``), and label quality on a held-out
slice (``quality``), with the tables they print (``tables``).

Rule: a benchmark measures the engine and the method from outside. It imports the package root, ``engine`` and
``method``, never ``fleet``: a benchmark needs no store.
"""
