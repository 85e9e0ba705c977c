"""``atrium demo``: sample data in every area, loaded into a running server the way a user would."""
