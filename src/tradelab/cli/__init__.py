"""The `tradelab` command line: thin typer commands over plain functions."""
