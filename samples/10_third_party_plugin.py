"""10 - A third-party plugin package.

samples/thirdparty_plugin/ is a tiny installable package, `kernel-echo`. Its module
implements the kernel's hooks (`register_connectors`, `register_plugins`): it adds a chat
provider `echo` and a plugin `shout`. Installed with pip, the kernel loads it through the
`orchestration_kernel` entry-point group (limit autoloading with
KERNEL_PLUGIN_ALLOWLIST=kernel-echo, or turn it off with KERNEL_PLUGIN_AUTOLOAD=false). Here we
register the module directly with `kernel.register(...)`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from kernel import Kernel, PromptFunction, ServiceSettings

sys.path.insert(0, str(Path(__file__).parent / "thirdparty_plugin"))
import kernel_echo  # the package is not installed in this sample: import it from its folder


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    kernel.register(kernel_echo)  # its hooks run now: provider `echo`, plugin `shout`

    # A service that uses the new provider, as `[services.parrot]` in kernel.toml would declare it.
    kernel.settings.services.setdefault("parrot", ServiceSettings(provider="echo", options={"prefix": "parrot: "}))
    kernel.add_function(PromptFunction.from_template(
        "{{ shout.exclaim(greeting, times=2) }}", name="greet", plugin="demo", service="parrot",
    ))
    result = await kernel.invoke("demo.greet", greeting="Hello from a plugin package")
    print(result.value)
    return result.value


if __name__ == "__main__":
    asyncio.run(main())
