"""pySigma plugin: icsmon's rule checks (``detectors/sigma/validators.py``), found by
``sigma check`` and ``sigma list validators`` in the ``sigma.validators`` namespace as
pySigma finds its other validator plugins. Configured, like pySigma's own, by
``detectors/sigma/sigma-validation.yml``."""

from detectors.sigma.validators import VALIDATORS

__all__ = ["validators"]

validators = VALIDATORS
