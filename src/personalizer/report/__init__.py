"""The HTML report: KPIs, model quality, segments, flow funnels and experiments on one page."""
