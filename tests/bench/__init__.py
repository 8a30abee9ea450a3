"""Tests of the benchmarks (labelling/bench and benchmarks/)."""
