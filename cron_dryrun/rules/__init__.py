"""The judging rules: pure functions of recorded data (no I/O), and the gate verdict."""
