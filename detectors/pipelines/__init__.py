"""Processing pipelines (pySigma YAML) shared by the matcher and the converter."""
