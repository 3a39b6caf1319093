"""Feeds in, warehouse out: importers, adapters, the synthetic shop, quarantine."""
