"""The service catalog: every service, core or extension, is one description.

``spec`` says what a service is, ``kinds`` how each kind (docker, native-api,
remote-api) is run, probed, updated and removed, ``core`` describes the core
services. Importing the package registers the core services.
"""

from . import core  # noqa: F401  (registers the core services)
from .spec import CATALOG, ServiceSpec, Volume

__all__ = ["CATALOG", "ServiceSpec", "Volume"]
