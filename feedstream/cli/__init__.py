"""cli"""

from feedstream.cli.commands import main

__all__ = ["main"]
