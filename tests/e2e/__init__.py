"""Tests of cross-cutting suites: fidelity to the reference, bad input, security, chaos."""
