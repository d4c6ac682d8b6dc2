"""Development tools, kept in the repository and out of the production wheel: the sandbox gateway
(a Plural stand-in), the whole stack as processes (``up``), chaos runs, the demo, and the embedded
Redis and PostgreSQL. ``python -m devkit --help``."""
