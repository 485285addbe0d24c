"""The default responder's replies: plausible, deterministic functions of the request.

* Tools offered and asked for (``tool_choice`` ``any``/``tool``, or the prompt names a tool or
  says "use the tool"): a ``tool_use`` block whose input fits the tool's ``input_schema``. After
  a ``tool_result`` turn an ``auto`` request is answered in text instead.
* The prompt asks for JSON (``output_config.format`` with a schema, or the word "JSON"): JSON
  text that fits the schema (one given in ``output_config``, a JSON schema or example object
  found in the prompt, or a small ``{"summary", "key_points"}`` object).
* Otherwise: an extractive summary of the last user turn as bullet points (as many as the
  prompt asks for, "three bullet points", else 3).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

__all__ = ["default_content", "fill_schema"]

_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10}
_COUNT = re.compile(r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)\s+"
                    r"(?:short\s+|key\s+|main\s+)?(?:bullet|point|item|idea|reason|step)s?\b",
                    re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_JSON_WORD = re.compile(r"\bjson\b", re.IGNORECASE)
_USE_TOOL = re.compile(r"\b(?:use|call|invoke)\s+(?:a|the|your|one)?\s*tools?\b", re.IGNORECASE)
_STOPWORDS = frozenset(
    "about above after again against because been before being below between both could "
    "does doing down during each from further have having here into itself just more most "
    "much must need only other over same should some such than that their them then there "
    "these they this those through under until very were what when where which while with "
    "would your yours please explain write give list tell short brief answer reply using "
    "make says said also like bullet bullets point points summary summarise summarize "
    "describe three four five seven eight nine".split())
_TEMPLATES = (
    "{k} matters because it shapes how the rest of the work is organised.",
    "A careful look at {k} shows where the real trade-offs lie.",
    "In practice, {k} is best handled step by step, checking each result.",
    "The evidence points to {k} as the part most worth getting right.",
    "Keeping {k} simple makes the whole system easier to test and to change.",
)


def default_content(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The default reply's content blocks for ``body``."""
    prompt = _last_user_text(body)
    choice = (body.get("tool_choice") or {}).get("type", "auto")
    tool = _tool_to_call(body, prompt, choice)
    if tool is not None:
        call = {"type": "tool_use", "name": tool["name"],
                "input": fill_schema(tool.get("input_schema") or {}, prompt, tool["name"])}
        if choice == "auto":
            return [{"type": "text", "text": f"I'll use the {tool['name']} tool."}, call]
        return [call]
    if _after_tool_result(body):
        return [{"type": "text", "text": _tool_answer(body)}]
    fmt = (body.get("output_config") or {}).get("format") or {}
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        return [{"type": "text", "text": json.dumps(fill_schema(fmt["schema"], prompt, "reply"))}]
    return [{"type": "text", "text": _text_reply(prompt, _system(body))}]


@lru_cache(maxsize=512)
def _text_reply(prompt: str, system: str) -> str:
    """JSON when the prompt or system asks for it, else the summary (cached: deterministic)."""
    if _JSON_WORD.search(prompt) or (system and _JSON_WORD.search(system)):
        schema = _schema_in(prompt) or _DEFAULT_SCHEMA
        return json.dumps(fill_schema(schema, prompt, "reply"))
    return _summary(prompt)


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def _system(body: dict[str, Any]) -> str:
    system = body.get("system")
    return system if isinstance(system, str) else _text_of(system)


def _after_tool_result(body: dict[str, Any]) -> bool:
    last = (body.get("messages") or [{}])[-1]
    content = last.get("content")
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def _tool_to_call(body: dict[str, Any], prompt: str, choice: str) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    if not tools or choice == "none":
        return None
    if choice == "tool":
        name = body["tool_choice"]["name"]
        return next(t for t in tools if t.get("name") == name)
    named = next((t for t in tools if _mentions(prompt, t.get("name", ""))), None)
    if choice == "any":
        return named or tools[0]
    if _after_tool_result(body):
        return None
    if named is not None:
        return named
    return tools[0] if _USE_TOOL.search(prompt) else None


def _mentions(prompt: str, name: str) -> bool:
    lowered = prompt.lower()
    return bool(name) and (name.lower() in lowered or name.replace("_", " ").lower() in lowered)


def _tool_answer(body: dict[str, Any]) -> str:
    result = _text_of((body.get("messages") or [{}])[-1].get("content"))
    words = result.split()
    gist = " ".join(words[:40]) + ("..." if len(words) > 40 else "")
    return f"Based on the tool result: {gist}" if gist else "The tool returned no output."


def _summary(prompt: str) -> str:
    """Bullet points drawn from the prompt's sentences, padded from its keywords."""
    text = " ".join(prompt.split())
    match = _COUNT.search(text)
    count = 3
    if match:
        word = match.group(1).lower()
        count = max(1, min(10, _NUMBERS.get(word) or int(word)))
    keys = _keywords(text) or ["the question"]
    # A one-sentence prompt is an instruction, not material: only longer ones are quoted.
    sentences = [s for s in _SENTENCE.split(text) if len(s.split()) >= 4]
    if len(sentences) < 2:
        sentences = []
    bullets = []
    for i in range(count):
        if i < len(sentences) and i < count - 1:
            bullets.append(_clip(sentences[i], 18))
        else:
            line = _TEMPLATES[i % len(_TEMPLATES)].format(k=keys[i % len(keys)])
            bullets.append(line[0].upper() + line[1:])
    head = f"Here are {count} key points about {keys[0]}:"
    tail = f"In short, {' and '.join(keys[:2])} are what to keep in mind."
    return head + "\n\n" + "\n".join(f"- {b}" for b in bullets) + "\n\n" + tail


def _keywords(text: str) -> list[str]:
    counts: dict[str, int] = {}
    for word in _WORD.findall(text):
        lowered = word.lower()
        if lowered not in _STOPWORDS:
            counts[lowered] = counts.get(lowered, 0) + 1
    # Frequent first, then longer (a rough proxy for content words), then earlier.
    order = {w: i for i, w in enumerate(counts)}
    ranked = sorted(counts, key=lambda w: (-counts[w], -len(w), order[w]))
    return ranked[:3]


def _proper_nouns(prompt: str) -> list[str]:
    """Capitalised words not opening a sentence: likely names of places, people, things."""
    words = prompt.split()
    found = []
    for i in range(1, len(words)):
        word = words[i].strip(".,;:!?\"'()")
        if word[:1].isupper() and not words[i - 1].endswith((".", "?", "!")):
            found.append(word)
    return found


def _clip(sentence: str, words: int) -> str:
    parts = sentence.split()
    clipped = " ".join(parts[:words])
    return clipped if len(parts) <= words else clipped.rstrip(",;:") + "..."


_DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string"},
                   "key_points": {"type": "array", "items": {"type": "string"}}},
}


def _schema_in(prompt: str) -> dict[str, Any] | None:
    """A JSON schema, or an example object turned into one, found in the prompt."""
    found = _first_json_object(prompt)
    if found is None:
        return None
    if "properties" in found or found.get("type") == "object":
        return found
    return _schema_of_example(found)


def _first_json_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(20):  # bounded: a prompt full of braces must not make this quadratic
        if start < 0:
            return None
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else None
    return None


def _schema_of_example(example: Any) -> dict[str, Any]:
    if isinstance(example, dict):
        return {"type": "object",
                "properties": {k: _schema_of_example(v) for k, v in example.items()}}
    if isinstance(example, list):
        return {"type": "array", "items": _schema_of_example(example[0] if example else "")}
    for kind, python in (("boolean", bool), ("integer", int), ("number", float)):
        if isinstance(example, python):
            return {"type": kind}
    return {"type": "string"}


def fill_schema(schema: dict[str, Any], prompt: str, name: str, depth: int = 0) -> Any:
    """A value that fits ``schema``, built from the prompt's words (deterministic).

    Example:
        >>> fill_schema({"type": "object", "properties": {"n": {"type": "integer"}}}, "x", "t")
        {'n': 3}
    """
    if depth > 6:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return fill_schema(schema[key][0], prompt, name, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: fill_schema(sub, prompt, key, depth + 1) for key, sub in props.items()}
    if kind == "array":
        items = schema.get("items") or {"type": "string"}
        size = max(2, int(schema.get("minItems", 0)))
        return [fill_schema(items, prompt, f"{name}{i}", depth + 1) for i in range(size)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 0)
        return low + 3 if kind == "integer" else float(low) + 0.75
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_for(name, prompt)


def _string_for(name: str, prompt: str) -> str:
    keys = _keywords(" ".join(prompt.split())) or ["example"]
    lowered = name.lower()
    if "url" in lowered:
        return f"https://example.com/{keys[0]}"
    if "path" in lowered or "file" in lowered:
        return f"{keys[0]}.txt"
    if any(w in lowered for w in ("query", "question", "topic", "search", "summary")):
        return " ".join(prompt.split()[:12]) or keys[0]
    names = _proper_nouns(prompt)
    if names and any(w in lowered for w in ("location", "city", "place", "country", "name",
                                            "person", "company", "where")):
        return names[0]
    return " ".join(keys[:2])
