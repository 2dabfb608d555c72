"""Sinks, the embedded store, Kafka and Elasticsearch: where a sensor's documents go."""

# The sensor package decides, before any of them is imported, whether the compiled build of
# the modules in sensor.COMPILED (some of which are here) or their source is used.
import sensor  # noqa: F401
