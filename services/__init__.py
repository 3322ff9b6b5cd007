"""kdesk services; each is runnable as `python -m services.<name>`."""
