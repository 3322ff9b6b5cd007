"""The simulated outside world: Kalshi-compatible exchange, crypto venues, weather; `python -m services.sim`."""
