"""The Plural API client: transport seam → requestor → resource methods returning typed models."""

from orchestrator.plural.client import PluralClient
from orchestrator.plural import errors, models

__all__ = ["PluralClient", "errors", "models"]
