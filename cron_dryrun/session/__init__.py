"""One run of the suite: its state, the preflight, what it writes and prints at the end."""
