"""A third-party plugin that fails while being imported."""

raise RuntimeError("thirdparty_badimport cannot start: missing widget")
