"""feedstream: feeds in, normalized entries out, streamed to browsers through a long-poll."""

__version__ = "0.1.0"
