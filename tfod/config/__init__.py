"""Configure: a run's OD API ``pipeline.config`` from a registry model and a converted folder.

``registry`` (the supported models and their base configs), ``schedule`` (batch, learning
rate and steps as proto edits), ``overrides`` (strict ``key=value`` edits of proto
fields), ``pipeline`` (the builder and writer) and ``request`` (:class:`ConfigRequest`, what a
tool asks for; importing it does not import TensorFlow).
"""
from tfod.errors import BadInput


class ConfigError(BadInput):
    """A config cannot be built as asked (bad flag, override, data folder or checkpoint)."""
