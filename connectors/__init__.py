"""Built-in connectors: one module per provider or store, each a pluggy plugin that
registers its factory through the `register_connectors` hook. No module here imports its
provider SDK at import time."""
