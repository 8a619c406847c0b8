"""Hardening tests (issue #8): faults, load, security."""
