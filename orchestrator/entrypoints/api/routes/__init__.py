"""The API's routes, one module per subject; each ``add(app, ...)`` registers its own."""
