"""Journeys: declarative flows (trigger, steps, exits), the engine that runs them, frequency caps
across flows, the durable send queue, and replays over history.

- `definitions`: the YAML format and its validation; `default_flows.yaml`, the shipped flows;
- `timeline`: activity indexed by customer and time; `activity`: loading it from the data home;
- `entries`: triggers and re-entry rules; `engine`: exits, steps, outcomes; `caps`: frequency caps;
  `send_time`: quiet hours and best hours;
- `state`, `queue`: journey state in memory and on disk (SQLite), the send queue;
- `runs`: one scheduled run; `replay`: the flows over history; `cli`: `personalizer journeys`.
"""
