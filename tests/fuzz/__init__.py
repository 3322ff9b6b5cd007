"""Bad-input fuzzing of the desk's parsers and handlers (the short form of benchmarks/fuzz.py)."""
