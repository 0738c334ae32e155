"""Sync health: the operator's figures, their service levels and the checks that turn red."""
