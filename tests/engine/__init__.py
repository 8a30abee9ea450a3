"""Tests of the engine wing (labelling/engine)."""
