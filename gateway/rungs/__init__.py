"""The rungs of the ladder (docs/ladder.md; the table of what each supports is gateway/ladder.py)."""
