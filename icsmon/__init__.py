"""icsmon: industrial network security monitor (command line and configuration)."""

__version__ = "0.1.0"

# The sensor package decides, before any of them is imported, whether the compiled build of
# the modules in sensor.COMPILED (icsmon.loop is one) or their source is used.
import sensor  # noqa: E402, F401
