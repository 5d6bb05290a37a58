"""`python -m tradelab` runs the CLI."""

from tradelab.cli.main import run

if __name__ == "__main__":
    run()
