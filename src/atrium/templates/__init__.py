"""The templates domain."""
