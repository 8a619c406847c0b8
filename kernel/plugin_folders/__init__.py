"""Plugin folders: our `.prompt` files, Semantic Kernel's folders and YAML prompts, and
native Python modules, loaded with one call and every problem reported at once.

    discovery       load_plugins: which folders are plugins, which files are functions;
                    check_plugins: the same without raising (and without importing any
                    module, by default), each function with its problems; load_folder:
                    a folder added to a kernel, strict or function by function
    references      what templates call, the variables of declared inputs, execution
                    settings against the configured providers: checked after loading
    reader          safe file access (no links out of the root, regular files only, size
                    and encoding checks); problems are errors or warnings
    prompt_format   our `.prompt` format: YAML front matter and a Jinja body
    sk_format       Semantic Kernel's function folders and YAML prompts
    sk_syntax       SK template syntax translated to Jinja
    declarations    inputs and templates turned into PromptFunctions, problems at file:line
    python_modules  `*.py` modules imported from their files, or only parsed
    yaml_data       safe YAML and JSON: no aliases, nesting bounded
    parse_cache     parsed function files kept by content hash (cache_dir/parse-cache), so an
                    unchanged folder loads without parsing; `parse_cache_of(settings)`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .discovery import (
        FolderCheck,
        FunctionCheck,
        check_plugins,
        load_folder,
        load_plugins,
        parse_cache_of,
        record_problems,
    )
    from .parse_cache import ParseCache
    from .prompt_format import PROMPT_SUFFIX, parse_front_matter
    from .python_modules import ModuleInfo
    from .reader import MAX_FILE_BYTES
    from .references import Known
    from .sk_format import sk_settings
    from .sk_syntax import SKTemplateError, translate
    from .yaml_data import MAX_DEPTH

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "PROMPT_SUFFIX",
    "FolderCheck",
    "FunctionCheck",
    "Known",
    "ModuleInfo",
    "ParseCache",
    "SKTemplateError",
    "check_plugins",
    "load_folder",
    "load_plugins",
    "parse_cache_of",
    "parse_front_matter",
    "record_problems",
    "sk_settings",
    "translate",
]

_LOCATIONS = {
    **dict.fromkeys(("FolderCheck", "FunctionCheck", "check_plugins", "load_folder", "load_plugins",
                     "parse_cache_of", "record_problems"), "discovery"),
    "ParseCache": "parse_cache",
    "Known": "references",
    "MAX_DEPTH": "yaml_data",
    "ModuleInfo": "python_modules",
    **dict.fromkeys(("PROMPT_SUFFIX", "parse_front_matter"), "prompt_format"),
    "MAX_FILE_BYTES": "reader",
    "sk_settings": "sk_format",
    **dict.fromkeys(("SKTemplateError", "translate"), "sk_syntax"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
