"""icsmon: industrial network security monitor (command line and configuration)."""

__version__ = "0.1.0"
