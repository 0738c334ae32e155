"""Webhooks in Dagster: the sensor that applies received webhooks so the landing sensor loads them."""
