"""CLI verbs of the full toolkit. Each module has `register(app)`; bodies call the library."""
