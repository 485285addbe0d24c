"""``raytroupe demo``: the README's main job, offline on the emulator."""

from __future__ import annotations

import asyncio

import typer


async def _stream_one_reply(base_url: str, api_key: str) -> None:
    from anthropic import AsyncAnthropic

    client = AsyncAnthropic(base_url=base_url, api_key=api_key, max_retries=0)
    async with client:
        async with client.messages.stream(
            model="claude-haiku-5-5",
            max_tokens=200,
            messages=[{"role": "user", "content": "Explain in three bullet points why an "
                       "actor model suits a fleet of LLM agents."}],
        ) as stream:
            async for text in stream.text_stream:
                typer.echo(text, nl=False)
            final = await stream.get_final_message()
    typer.echo(f"\n\nusage: {final.usage.input_tokens} in, {final.usage.output_tokens} out")


def demo() -> None:
    """Start the local emulator and stream one reply through the real anthropic SDK."""
    from emulator import run_emulator

    with run_emulator() as emu:
        typer.echo(f"offline: using the raytroupe emulator at {emu.base_url}\n")
        asyncio.run(_stream_one_reply(emu.base_url, emu.api_key))
