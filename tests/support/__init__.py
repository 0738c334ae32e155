"""Helpers shared by tests of several areas (import as ``support.<module>``)."""
