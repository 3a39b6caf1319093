"""The BentoML service: the decision app (`personalizer.api.app`) mounted in a BentoML service.

`bentoml serve personalizer.service:Personalizer` (or `personalizer serve`, or a built bento) runs
it. Every route of the app is served as is (see `api/app.py`); BentoML adds its own `/livez`,
`/healthz`, `/readyz` and `/metrics` at the root, which shadow the app's, so the app's readiness
(which models are loaded, which versions, what is degraded) and metrics are also at `/v1/readyz`
and `/v1/metrics`. Importing this module is cheap: the snapshot is built in the worker, in the
background, once the service starts.
"""

from __future__ import annotations

from typing import Any

import bentoml

from personalizer.api.app import create_app

app = create_app(load="later")


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="personalizer",
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
)
class Personalizer:
    """Email decisions over HTTP."""

    def __init__(self) -> None:
        app.state.service.start()

    @bentoml.api(route="/stats")
    def stats(self) -> dict[str, Any]:
        """Rows, date ranges, customers and products per warehouse table."""
        from personalizer.data.warehouse import Warehouse, WarehouseLocked, table_stats

        settings = app.state.service.settings
        try:
            with Warehouse(settings.warehouse_path, read_only=True, wait_seconds=2) as wh:
                frame = table_stats(wh)
        except (FileNotFoundError, WarehouseLocked) as exc:
            return {"tables": [], "error": str(exc)}
        records = frame.to_dict(orient="records")
        for record in records:
            for key in ("from", "to"):
                value = record[key]
                record[key] = None if value is None or value != value else str(value)
        return {"tables": records}
