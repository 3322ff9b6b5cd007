"""Shared library used by every kdesk service: config, events, bus, database, money, health."""
