"""Where the lab runs: Docker containers or local processes, behind one interface.

    runtime = select_runtime(settings, lab, "auto")
    runtime.up(); runtime.status(); runtime.down()
"""
