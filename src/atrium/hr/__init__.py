"""The hr domain."""
