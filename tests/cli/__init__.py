"""Tests of the installed `labelling` command, run in subprocesses."""
