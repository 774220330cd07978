"""CLI verbs of the runtime. Each module has `register(app)`; each body: check flags, call the library, print."""
