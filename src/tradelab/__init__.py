"""tradelab: an SRE practice lab in one pip install.

    pip install tradelab
    tradelab up

Nothing is imported here: the CLI, the app and the runtimes load their own
dependencies when a command needs them, so `tradelab --help` stays fast.
"""

__version__ = "0.1.0"
