"""The market domain."""
