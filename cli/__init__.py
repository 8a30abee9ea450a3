"""The ``labelling`` command line: a Typer app whose commands live one per module in this package."""
