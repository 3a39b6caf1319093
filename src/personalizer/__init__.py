"""personalizer: who gets each marketing email, what goes in it, and when it is sent."""

__version__ = "0.1.0"
