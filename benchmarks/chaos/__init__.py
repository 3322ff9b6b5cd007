"""The fault campaign behind `make chaos` (issue 18): see campaign.py; `python -m benchmarks.chaos` runs it."""
