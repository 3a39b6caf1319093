"""Models: recommenders, churn, lifetime value, propensity, uplift, send time."""
