"""Cross-cutting machinery every domain shares: database, errors, HTTP plumbing, security."""
