"""`make bench`: throughput and latency of kdesk's parts, reported as one JSON object."""
