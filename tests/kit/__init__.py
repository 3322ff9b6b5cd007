"""Shared test kit: infrastructure handles and event factories used by every suite."""
