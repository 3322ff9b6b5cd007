"""Placeholder: the notifier service is not built yet (issue 11); with no `__main__`, `kdesk up` skips it."""
