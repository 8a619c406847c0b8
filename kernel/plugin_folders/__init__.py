"""Plugin folders: our `.prompt` files, Semantic Kernel's folders and YAML prompts, and
native Python modules, loaded with one call and every problem reported at once.

    discovery       load_plugins: which folders are plugins, which files are functions
    reader          safe file access (no links out of the root, size and encoding checks)
    prompt_format   our `.prompt` format: YAML front matter and a Jinja body
    sk_format       Semantic Kernel's function folders and YAML prompts
    sk_syntax       SK template syntax translated to Jinja
    declarations    inputs and templates turned into PromptFunctions, problems at file:line
    python_modules  `*.py` modules imported from their files
    yaml_data       safe YAML loading
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .discovery import load_plugins
    from .prompt_format import PROMPT_SUFFIX, parse_front_matter
    from .reader import MAX_FILE_BYTES
    from .sk_format import sk_settings
    from .sk_syntax import SKTemplateError, translate

__all__ = [
    "MAX_FILE_BYTES",
    "PROMPT_SUFFIX",
    "SKTemplateError",
    "load_plugins",
    "parse_front_matter",
    "sk_settings",
    "translate",
]

_LOCATIONS = {
    "load_plugins": "discovery",
    **dict.fromkeys(("PROMPT_SUFFIX", "parse_front_matter"), "prompt_format"),
    "MAX_FILE_BYTES": "reader",
    "sk_settings": "sk_format",
    **dict.fromkeys(("SKTemplateError", "translate"), "sk_syntax"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
