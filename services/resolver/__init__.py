"""The resolver service (not implemented yet: no __main__, so the supervisor does not start it)."""
