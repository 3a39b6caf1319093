"""The personalization layer of the emails: sandboxed templates, content blocks, rendering.

- `environment`: the Jinja2 sandbox, its filters (`money`, `utm`, `track`) and `TemplateError`;
- `inlining`: the layout's CSS inlined into each HTML template source once, at load;
- `blocks`: content blocks chosen by YAML rules (first match wins per slot);
- `context`: `EmailContext`, what templates read, and `sample_context` for previews;
- `renderer`: `Renderer.render(template, context) -> RenderedEmail(subject, html, text)`.
"""

from personalizer.render.blocks import (
    BlockRule,
    BlockRuleError,
    BlockRules,
    SelectedBlock,
    available_blocks,
    default_block_rules,
    load_block_rules,
    parse_block_rules,
    select_blocks,
)
from personalizer.render.context import (
    CustomerRef,
    EmailContext,
    ProductCard,
    Shop,
    sample_context,
    sample_products,
)
from personalizer.render.environment import (
    TemplateError,
    create_environment,
    money,
    render_string,
    render_template,
    utm,
)
from personalizer.render.renderer import RenderedEmail, Renderer

__all__ = [
    "BlockRule",
    "BlockRuleError",
    "BlockRules",
    "CustomerRef",
    "EmailContext",
    "ProductCard",
    "RenderedEmail",
    "Renderer",
    "SelectedBlock",
    "Shop",
    "TemplateError",
    "available_blocks",
    "create_environment",
    "default_block_rules",
    "load_block_rules",
    "money",
    "parse_block_rules",
    "render_string",
    "render_template",
    "sample_context",
    "sample_products",
    "select_blocks",
    "utm",
]
