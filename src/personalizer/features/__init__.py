"""Customer features and interaction matrices."""
