"""Tests of the method wing (labelling/method)."""
