"""The README's example: a research run through the session API, streamed, with its costs.

Run it offline (the emulator answers):  python examples/research_session.py
"""

import asyncio

import cluster
from topologies import CostTrackerPlugin, create_session
from topologies.research import ResearchConfig


async def main() -> None:
    runtime = cluster.init()  # starts Ray and, without ANTHROPIC_API_KEY, the offline emulator
    config = ResearchConfig(max_parallel_agents=4, lead_model="sonnet", subagent_model="haiku")
    async with create_session("research", runtime=runtime, config=config) as session:
        costs = CostTrackerPlugin()
        session.architecture.add_plugin(costs)
        async for event in session.run("How do actor runtimes keep LLM fleets under limits?"):
            if event.kind == "text":  # the synthesizer's answer, as it streams
                print(event.text, end="", flush=True)
        summary = costs.get_cost_summary()
    print(f"\n\n{summary['total_tokens']} tokens, ${summary['total_cost_usd']:.6f}")
    for agent, usd in summary["agent_costs"].items():
        print(f"  {agent}: ${usd:.6f}")


if __name__ == "__main__":
    asyncio.run(main())
