"""Settings: every option read once into one frozen object (no project imports but redaction)."""
