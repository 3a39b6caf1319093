"""The preview page: one template rendered for a sample customer of every segment, desktop and mobile.

`GET /preview?template=NAME` lists the segments of the live memberships; for each, the first
customer (in id order) who is in it and consents to email is the sample, and the page shows the
decision for them: the email in a desktop window 800 px wide and on a 375 px phone (sandboxed
iframes), the subject, the blocks chosen and every reason. Previews render strictly: a variable a
template misses is shown as an error naming it, where production would render it empty.
`GET /preview/email?template=&customer_id=` is one email's HTML alone.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

if TYPE_CHECKING:
    from personalizer.api.app import ServiceState
    from personalizer.decisions.decider import Decider

# A desktop mail client shows the 600 px email in a wider window: a frame of 600 px would match the
# layout's phone rule (max-width: 620px) and show the phone layout twice
WIDTHS = (("desktop", 800), ("mobile", 375))
PREVIEW_CAMPAIGN = "preview"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f3f4f6; color: #111827; }}
header {{ background: #111827; color: white; padding: 12px 24px; display: flex; gap: 24px;
  align-items: center; }}
header h1 {{ font-size: 18px; margin: 0; }}
form {{ display: flex; gap: 8px; align-items: center; }}
main {{ padding: 16px 24px; }}
section.sample {{ background: white; border-radius: 8px; margin: 0 0 20px; padding: 16px;
  box-shadow: 0 1px 3px rgba(0,0,0,.1); }}
section.sample h2 {{ margin: 0 0 4px; font-size: 16px; }}
.meta {{ color: #4b5563; font-size: 13px; margin: 0 0 8px; }}
.frames {{ display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }}
figure {{ margin: 0; }}
figcaption {{ font-size: 12px; color: #6b7280; }}
iframe {{ border: 1px solid #d1d5db; background: white; height: 640px; }}
ul.reasons {{ font-size: 12px; color: #374151; max-width: 360px; margin: 0; padding-left: 18px; }}
.error {{ color: #991b1b; background: #fee2e2; padding: 8px; border-radius: 4px; }}
</style></head>
<body><header><h1>Email preview</h1>
<form method="get" action="preview"><label for="template">Template</label>
<select id="template" name="template">{options}</select><button type="submit">Show</button></form>
<span class="meta">{summary}</span></header>
<main>{body}</main></body></html>
"""


async def preview(request: Request, state: ServiceState) -> Any:
    from personalizer.api.app import ApiError

    decider = state.preview
    if decider is None:
        raise ApiError(503, "the service is loading its models; retry shortly")
    templates = decider.renderer.templates()
    template = request.query_params.get("template", templates[0] if templates else "")
    if template not in templates:
        raise ApiError(422, f"template: unknown {template!r}; one of {', '.join(templates)}")
    options = "".join(
        f'<option value="{html.escape(t)}"{" selected" if t == template else ""}>'
        f"{html.escape(t)}</option>"
        for t in templates
    )
    samples = sample_customers(decider)
    sections = [_section(decider, template, seg, cid) for seg, cid in samples.items()]
    if not sections:
        sections = ['<p class="error">No segment has a customer with email consent yet.</p>']
    summary = (
        f"{len(samples)} segments · snapshot of {decider.snapshot.as_of:%Y-%m-%d %H:%M} UTC"
        + (
            f" · degraded: {'; '.join(decider.snapshot.degraded)}"
            if decider.snapshot.degraded
            else ""
        )
    )
    page = _PAGE.format(
        title=f"Preview: {html.escape(template)}",
        options=options,
        summary=html.escape(summary),
        body="\n".join(sections),
    )
    return HTMLResponse(page)


async def preview_email(request: Request, state: ServiceState) -> Any:
    from personalizer.api.app import ApiError

    decider = state.preview
    if decider is None:
        raise ApiError(503, "the service is loading its models; retry shortly")
    template = request.query_params.get("template", "")
    customer = request.query_params.get("customer_id", "")
    if template not in decider.renderer.templates():
        raise ApiError(422, f"template: unknown {template!r}")
    if not decider.known(customer):
        raise ApiError(404, f"customer_id: unknown customer {customer!r}")
    decision = decider.decide(customer, template, PREVIEW_CAMPAIGN)
    if decision["content"] is None:
        raise ApiError(409, "; ".join(decision["reasons"]))
    return HTMLResponse(decision["content"]["html"])


def sample_customers(decider: Decider) -> dict[str, str]:
    """Per segment (sorted by name), a consenting member: the first in id order not already the
    sample of another segment (the smallest segments choose first), else the first."""
    updater = decider.snapshot.updater
    if updater is None:
        return {}
    customers = decider.snapshot.customers
    members = updater.memberships()
    consenting: dict[str, list[str]] = {}
    for segment, group in members.groupby("segment", sort=True):
        ids = sorted(group["customer_id"].astype(str))
        ids = [c for c in ids if (r := customers.get(c)) is not None and r.email_consent]
        if ids:
            consenting[str(segment)] = ids
    taken: set[str] = set()
    chosen: dict[str, str] = {}
    for segment in sorted(consenting, key=lambda s: (len(consenting[s]), s)):
        ids = consenting[segment]
        pick = next((c for c in ids if c not in taken), ids[0])
        chosen[segment] = pick
        taken.add(pick)
    return dict(sorted(chosen.items()))


def _section(decider: Decider, template: str, segment: str, customer_id: str) -> str:
    decision = decider.decide(customer_id, template, PREVIEW_CAMPAIGN)
    head = (
        f'<section class="sample" data-segment="{html.escape(segment)}">'
        f"<h2>{html.escape(segment)}</h2>"
        f'<p class="meta">customer {html.escape(customer_id)} · decision '
        f"{html.escape(decision['decision_id'])}</p>"
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in decision["reasons"])
    content = decision.get("content")
    if content is None:
        return f'{head}<p class="error">{html.escape("; ".join(decision["reasons"]))}</p></section>'
    frames = "".join(
        f"<figure><figcaption>{name} · {width}px · subject: {html.escape(content['subject'])}"
        f'</figcaption><iframe class="{name}" title="{html.escape(segment)} {name}" '
        f'sandbox="" width="{width}" srcdoc="{html.escape(content["html"], quote=True)}">'
        "</iframe></figure>"
        for name, width in WIDTHS
    )
    return f'{head}<div class="frames">{frames}<ul class="reasons">{reasons}</ul></div></section>'
