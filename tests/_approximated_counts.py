"""Claude's and Gemini's token estimate as the library documents it, written out for the tests.

Their tokenizers are not public: a text shorter than 1,024 characters counts a token per 4
characters (rounded up) plus half a token per extra UTF-8 byte; a longer one counts o200k_base's
tokens (``count_text`` of an OpenAI model, whose tokenizer o200k_base is).
"""

from __future__ import annotations

from budgetclient.tokens import count_text


def approximated_tokens(text: str) -> int:
    if len(text) >= 1024:
        return count_text(text, "gpt-4o")
    extra_bytes = len(text.encode("utf-8", "surrogatepass")) - len(text)
    return -(-len(text) // 4) + extra_bytes // 2
