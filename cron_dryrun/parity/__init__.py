"""The parity engine: export readers, DB totals, reconcile, the diff report."""
