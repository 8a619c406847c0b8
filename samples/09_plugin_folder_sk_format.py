"""09 - Semantic Kernel plugin folders, unchanged.

samples/plugins_sk/WriterPlugin/ holds two functions in Semantic Kernel's folder format:
`NAME/skprompt.txt` (SK template syntax: `{{$input}}`, `{{plugin.function $arg}}`) and
`NAME/config.json` (description, input variables, execution settings). Bring existing SK
plugin folders as they are. `Headline` calls the standard `text.word_count` function
with SK's call syntax.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kernel import Kernel

FOLDER = Path(__file__).parent / "plugins_sk"  # every subfolder is one plugin

STORY = "A cat was elected mayor of a small town and promised a nap for everyone at noon."


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    kernel.add_plugin(FOLDER)
    print("functions:", ", ".join(fn.fully_qualified_name for fn in kernel.functions(["WriterPlugin"])))

    poem = await kernel.invoke("WriterPlugin.ShortPoem", input=STORY)
    print("poem:\n" + str(poem.value).strip())

    prompt = await kernel.render("WriterPlugin.Headline", input=STORY)
    print("headline prompt:", prompt[-1].content.splitlines()[0])
    headline = await kernel.invoke("WriterPlugin.Headline", input=STORY, max_words="6")
    print("headline:", str(headline.value).strip())
    return {"poem": poem.value, "headline_prompt": prompt[-1].content, "headline": headline.value}


if __name__ == "__main__":
    asyncio.run(main())
