"""Dagster wiring, the store control plane and the ``shopsync`` CLI.

The only package that imports dagster. Modules here wire and do not compute.
"""
