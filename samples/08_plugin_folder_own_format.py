"""08 - A plugin folder in the kernel's own format.

samples/plugins/travel/ is one plugin, `travel`:
* `packing_list.prompt`: YAML front matter (description, typed inputs with defaults,
  execution settings) then a Jinja body with `<message>` blocks. The body calls native
  functions: `travel.trip_days` from the same folder and `time.weekday` from the
  standard plugins.
* `tools.py`: its `@kernel_function`s join the plugin. (A folder is code: load only
  folders you trust.)
Load folders in code (`kernel.add_plugin(path)`), in kernel.toml (`plugin_dirs`), or on
the command line (`kernel --plugins samples/plugins plugins check`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kernel import Kernel

FOLDER = Path(__file__).parent / "plugins" / "travel"


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    plugin = kernel.add_plugin(FOLDER)
    for function in plugin:
        print(f"{function.fully_qualified_name}: {function.description}")

    args = {"destination": "Lisbon", "start": "2024-07-04", "end": "2024-07-07"}
    messages = await kernel.render("travel.packing_list", args)
    print("prompt:", messages[-1].content)

    result = await kernel.invoke("travel.packing_list", args, items=3)
    print("packing list:\n" + str(result.value).strip())
    return {"functions": sorted(plugin.functions), "prompt": messages[-1].content, "list": result.value}


if __name__ == "__main__":
    asyncio.run(main())
