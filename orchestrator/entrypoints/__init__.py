"""How processes start: the single runtime bootstrap, the API, the CLI."""
