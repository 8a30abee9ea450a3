"""Tests of the fleet wing (labelling/fleet) and tasks/."""
