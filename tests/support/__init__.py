"""What tests share: one polling helper, one CLI runner, one way to start the API.

    from support.polling import wait_for       # wait_for(check, 30, "the api to answer")
    from support.cli import invoke, run         # in-process (CliRunner) / a real subprocess
    from support.api import ApiServer           # `tradelab serve api` on a free port
"""
