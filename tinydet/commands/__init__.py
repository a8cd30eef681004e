"""One module per CLI verb: ``add_arguments(parser)``, ``run(args) -> dict | None``, ``render``."""
