"""An agent's conversation memory, compacted by summary when it outgrows its token budget.

The memory only keeps turns and decides what to compact; the summary itself is written by a
haiku call that the Agent makes through its normal call path, so it is rate-limited, budgeted
and recorded in the Ledger like any other call.
"""

from __future__ import annotations

from actors.messages import Turn
from actors.token_estimate import text_tokens

SUMMARY_PROMPT = (
    "Summarise the conversation below for your own later use. Keep facts, decisions, numbers, "
    "names and open questions; drop pleasantries. Write at most 200 words.\n\n"
)


class ConversationMemory:
    """Turns of one agent's conversation, oldest first.

    Example:
        >>> memory = ConversationMemory(budget_tokens=50, keep_recent=2)
        >>> memory.add("user", "hi"); memory.add("assistant", "hello")
        >>> memory.needs_compaction()
        False
    """

    def __init__(self, budget_tokens: int = 20_000, keep_recent: int = 4) -> None:
        self.budget_tokens = budget_tokens
        self.keep_recent = keep_recent
        self.turns: list[Turn] = []

    def add(self, role: str, text: str) -> None:
        """Append one turn."""
        self.turns.append(Turn(role=role, content=text))  # type: ignore[arg-type]

    def tokens(self) -> int:
        """Estimated tokens of every turn."""
        return sum(text_tokens(str(t.content)) for t in self.turns)

    def needs_compaction(self) -> bool:
        """True when over budget and there is more to summarise than the last summary.

        After a compaction the memory holds a summary exchange plus the recent turns; if those
        alone are over budget, summarising the summary again would only pay for nothing.
        """
        return self.tokens() > self.budget_tokens and len(self.turns) > self.keep_recent + 2

    def transcript_to_compact(self) -> str:
        """The older turns, as text for the summary prompt."""
        old = self.turns[: len(self.turns) - self.keep_recent]
        return "\n".join(f"{t.role}: {t.content}" for t in old)

    def compact(self, summary: str, upto: int | None = None) -> None:
        """Replace the turns before ``upto`` with one summary exchange, keeping the rest.

        ``upto`` is the count of older turns when the summary was asked for: turns added while
        it was being written are kept, not dropped unsummarised.
        """
        upto = len(self.turns) - self.keep_recent if upto is None else upto
        recent = self.turns[upto:]
        self.turns = [Turn(role="user", content=f"(Summary of our earlier conversation)\n"
                           f"{summary}"),
                      Turn(role="assistant", content="Understood."), *recent]
        # The API wants alternating roles starting with user: drop a leading assistant turn.
        while len(self.turns) > 2 and self.turns[2].role == "assistant":
            self.turns.pop(2)
