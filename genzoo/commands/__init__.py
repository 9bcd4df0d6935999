"""Extra ``zoo`` commands, grouped by topic, added to the CLI at the bottom of genzoo/cli.py.

Each module imports only click at top level (torch and the families load inside the commands),
so ``zoo --help`` stays well under a second.
"""
