"""The feeds service: where the outside world enters the desk (md.* subjects, feeds-owned tables)."""
