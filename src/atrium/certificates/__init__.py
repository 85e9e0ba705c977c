"""The certificates domain."""
