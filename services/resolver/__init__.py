"""Placeholder: the resolver service is not built yet (issue 10); with no `__main__`, `kdesk up` skips it."""
