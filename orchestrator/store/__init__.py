"""Persistence: SQLModel tables, engines, the repository with compare-and-set transitions."""
