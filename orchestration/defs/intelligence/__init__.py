"""Customer intelligence: identity, value metrics, consent, golden contacts and the analyst snapshot."""
