"""The trading service: the Flask API (`create_app`) and its gunicorn server.

    from tradelab.app.api import create_app

Nothing is imported here so that importing a submodule stays cheap.
"""
