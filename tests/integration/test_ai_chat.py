"""Ticket summaries by a chat model (deployments/ai/chat.py) against a real local HTTP
server speaking the OpenAI chat-completions protocol: what is sent, what is read
back, and every way the endpoint can fail becoming ChatUnavailable (the service then
falls back to the extractive summary)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from deployments.ai.chat import SYSTEM, ChatModel, ChatUnavailable
from tests.chat_server import ChatServer

THREAD = [
    ("description", "Invoice export fails. The export stops with an error."),
    ("user 7", "The error started after the new tax field was added."),
]


@pytest.fixture
def server() -> Iterator[ChatServer]:
    s = ChatServer()
    yield s
    s.stop()


@pytest.mark.asyncio
async def test_a_summary_is_the_models_answer_to_the_thread(server: ChatServer) -> None:
    chat = ChatModel(server.url + "/", "qwen2.5-7b-instruct", "sk-test", timeout_s=5)
    assert await chat.summarize(THREAD) == "Invoice export fails since the tax field."
    (sent,) = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "qwen2.5-7b-instruct"
    system, user = sent["body"]["messages"]
    assert system == {"role": "system", "content": SYSTEM}
    assert user["role"] == "user"
    assert "[description]\nInvoice export fails." in user["content"]
    assert "[user 7]\nThe error started" in user["content"]


@pytest.mark.asyncio
async def test_no_key_sends_no_authorization(server: ChatServer) -> None:
    await ChatModel(server.url, "m", None, timeout_s=5).summarize(THREAD)
    assert server.requests[0]["auth"] is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("error", "answered 500"),
        ("garbage", "not a chat completion"),
        ("empty", "no text"),
        ("slow", "ReadTimeout"),
    ],
)
async def test_every_failure_is_chat_unavailable(
    server: ChatServer, behaviour: str, reason: str
) -> None:
    server.behaviour = behaviour
    with pytest.raises(ChatUnavailable, match=reason):
        await ChatModel(server.url, "m", None, timeout_s=0.5).summarize(THREAD)


@pytest.mark.asyncio
async def test_a_closed_port_is_chat_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nobody listens once closed
    with pytest.raises(ChatUnavailable, match="ConnectError"):
        await ChatModel(f"http://127.0.0.1:{port}/v1", "m", None, timeout_s=2).summarize(THREAD)


def test_settings_decide_whether_a_chat_model_is_used() -> None:
    from cluster.settings import Settings

    base = {"pg_password": "x", "jwt_secret": "j" * 32, "secrets_key": "k" * 32}
    assert ChatModel.from_settings(Settings(**base)) is None  # type: ignore[arg-type]
    chat = ChatModel.from_settings(
        Settings(**base, ai_chat_url="http://llm:8080/v1/", ai_chat_api_key="sk")  # type: ignore[arg-type]
    )
    assert chat == ChatModel("http://llm:8080/v1", "gpt-4o-mini", "sk", 20.0)
