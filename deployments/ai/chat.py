"""Ticket summaries by a chat model behind any OpenAI-compatible endpoint (OpenAI,
vLLM, llama.cpp's server, Ollama, LocalAI...), when `NEXTFLOW_AI_CHAT_URL` names one.

    chat = ChatModel.from_settings(get_settings())     # None when not configured
    text = await chat.summarize(parts)                 # ChatUnavailable on any failure

The request is `POST <ai_chat_url>/chat/completions` with the model, a system
instruction and the thread as one user message; the answer is the first choice's
message. Anything else (a refused or slow connection, a status other than 200, a
body that is not a chat completion, an empty answer) is `ChatUnavailable`, and the
caller falls back to the extractive summary: a summary is never an error because a
model server is down. The thread goes to that server: configure only one you trust
with your customers' tickets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from cluster.settings import Settings

SYSTEM = (
    "You summarize customer-support ticket threads for the agent who picks them up. "
    "In at most three sentences, say what the customer's problem is, what has been "
    "tried or found so far, and what is still open. Use only facts from the thread."
)
MAX_THREAD_CHARS = 12_000  # well inside a small model's context


class ChatUnavailable(Exception):
    """The chat endpoint did not give a usable answer (the message says why)."""


@dataclass(frozen=True)
class ChatModel:
    url: str
    model: str
    api_key: str | None
    timeout_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> ChatModel | None:
        if not s.ai_chat_url:
            return None
        key = s.ai_chat_api_key.get_secret_value() if s.ai_chat_api_key else None
        return cls(s.ai_chat_url.rstrip("/"), s.ai_chat_model, key, s.ai_chat_timeout_s)

    def request(self, parts: list[tuple[str, str]]) -> dict[str, Any]:
        """The chat-completions body for a thread of (who, text) parts."""
        thread = "\n\n".join(f"[{who}]\n{text}" for who, text in parts)[:MAX_THREAD_CHARS]
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": thread},
            ],
            "temperature": 0.2,
            "max_tokens": 200,
        }

    async def summarize(self, parts: list[tuple[str, str]]) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                answer = await client.post(
                    f"{self.url.rstrip('/')}/chat/completions",
                    json=self.request(parts),
                    headers=headers,
                )
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"{type(exc).__name__} from the chat endpoint") from exc
        if answer.status_code != 200:
            raise ChatUnavailable(f"the chat endpoint answered {answer.status_code}")
        try:
            text = answer.json()["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError) as exc:
            raise ChatUnavailable("the chat endpoint's answer is not a chat completion") from exc
        if not isinstance(text, str) or not text.strip():
            raise ChatUnavailable("the chat endpoint answered with no text")
        return text.strip()
