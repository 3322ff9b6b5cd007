"""The signals service: weather-ensemble and BTC models against the books, fee-aware signals on `sig.*`.

`pipeline` holds market state and decides when to signal; `service` wires it to NATS and PostgreSQL.
"""
