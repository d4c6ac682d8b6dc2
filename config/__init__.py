"""Settings for every process; see ``config.settings``."""

from config.settings import ConfigurationError, PluralEnv, Settings, get_settings, load_settings

__all__ = ["ConfigurationError", "PluralEnv", "Settings", "get_settings", "load_settings"]
