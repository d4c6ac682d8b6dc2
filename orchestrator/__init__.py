"""Payment orchestration for the Plural (Pine Labs) online payment gateway."""

__version__ = "0.1.0"
