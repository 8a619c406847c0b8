"""Adversarial tests: what an auditor checks (see SECURITY.md for the map)."""
