"""07 - Switching provider by configuration.

The same prompt function runs on whichever chat service the configuration names:
samples/providers.toml declares `local`, `openai` and `anthropic` services and picks
`local` (no key needed). Switch without touching code:

    KERNEL_DEFAULT_CHAT=anthropic ANTHROPIC_API_KEY=... python samples/07_switching_provider.py

or edit `default_chat` in the file. A function can also pin a service (`service="openai"`)
or carry settings per service (`execution_settings={"openai": {...}, "default": {...}}`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kernel import Kernel, KernelSettings, PromptFunction

CONFIG = Path(__file__).with_name("providers.toml")


def build_kernel() -> Kernel:
    """The kernel of this sample: settings from providers.toml, then KERNEL_* variables."""
    return Kernel(settings=KernelSettings.load(CONFIG))


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or build_kernel()
    kernel.add_function(PromptFunction.from_template(
        "Name one fact about {{ planet }} in one sentence.", name="fact", plugin="astronomy",
    ))
    service = kernel.services.default_name("chat")
    configured = kernel.settings.services.get(service)
    provider = configured.provider if configured else "code"
    print(f"default chat service: {service} (provider {provider}); configured: {', '.join(kernel.services.names())}")

    result = await kernel.invoke("astronomy.fact", planet="Mars")
    print("answer:", str(result.value).strip())
    return {"service": service, "answer": result.value}


if __name__ == "__main__":
    asyncio.run(main())
