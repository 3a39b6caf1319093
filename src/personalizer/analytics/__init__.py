"""Email analytics: sends and what became of them, revenue attributed to campaigns, KPIs."""
