"""Operator CLI (`kdesk`) and the local supervisor behind `make run`."""
