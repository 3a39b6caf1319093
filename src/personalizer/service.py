"""The BentoML service (a thin shell over the library).

For now it answers what the warehouse holds; the decision endpoints arrive with the decision service.
BentoML itself provides /healthz, /livez and /readyz.
"""

from __future__ import annotations

from typing import Any

import bentoml

from personalizer.config import Settings


@bentoml.service(name="personalizer", traffic={"timeout": 30})
class Personalizer:
    """Email decisions over HTTP."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()

    @bentoml.api(route="/stats")
    def stats(self) -> dict[str, Any]:
        """Rows, date ranges, customers and products per warehouse table."""
        from personalizer.data.warehouse import Warehouse, WarehouseLocked, table_stats

        try:
            with Warehouse(self.settings.warehouse_path, read_only=True, wait_seconds=2) as wh:
                frame = table_stats(wh)
        except (FileNotFoundError, WarehouseLocked) as exc:
            return {"tables": [], "error": str(exc)}
        records = frame.to_dict(orient="records")
        for record in records:
            for key in ("from", "to"):
                value = record[key]
                record[key] = None if value is None or value != value else str(value)
        return {"tables": records}
