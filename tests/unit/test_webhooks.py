"""Outbound webhooks as pure logic: the retry schedule, the SSRF classification of
addresses, the signature, event-type filters and input validation."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from deployments._kit.events import Event
from deployments.webhooks import guard, signing
from deployments.webhooks.backoff import Backoff
from deployments.webhooks.schemas import WebhookCreate, WebhookUpdate
from deployments.webhooks.service import event_body, matches

DAY = 24 * 3600.0


# -- retry schedule ----------------------------------------------------------------------
def test_default_schedule_retries_for_at_least_a_day_even_with_the_least_jitter() -> None:
    backoff = Backoff()
    waits = []
    failures = 1
    while (wait := backoff.delay(failures, 0.0)) is not None:
        waits.append(wait)
        failures += 1
    assert sum(waits) >= DAY
    assert len(waits) + 1 == backoff.max_attempts()
    # Exponential at first, then capped.
    assert waits[:4] == [30.0, 60.0, 120.0, 240.0]
    assert max(waits) == backoff.cap_s
    # Not absurdly long either: it gives up within a day and a cap (+ jitter).
    assert sum(waits) < DAY + backoff.cap_s


def test_jitter_stays_within_its_bounds() -> None:
    backoff = Backoff(base_s=10, cap_s=1000, jitter=0.5)
    for failures in range(1, 10):
        nominal = backoff.nominal(failures)
        low, high = backoff.delay(failures, 0.0), backoff.delay(failures, 0.999999)
        assert low == nominal
        assert high is not None and nominal <= high < nominal * 1.5
        assert backoff.delay(failures, 0.5) == pytest.approx(nominal * 1.25)


def test_a_short_schedule_gives_up_after_its_horizon() -> None:
    backoff = Backoff(base_s=1, factor=2, cap_s=4, horizon_s=10)
    waits = [backoff.delay(n, 0.0) for n in range(1, 7)]
    # 1 + 2 + 4 + 4 = 11 >= 10: the fifth failure is the last.
    assert waits == [1, 2, 4, 4, None, None]
    assert backoff.max_attempts() == 5
    with pytest.raises(ValueError, match="failures"):
        backoff.delay(0, 0.0)


# -- SSRF guard ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_classify(address: str, reason: str | None) -> None:
    assert guard.classify(ipaddress.ip_address(address)) == reason


def test_policy_allows_private_addresses_only_when_told() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert guard.Policy().refusal(loopback) == "loopback"
    assert guard.Policy(allow_private=True).refusal(loopback) is None
    listed = guard.Policy.from_settings(False, "127.0.0.0/8, 10.1.0.0/16")
    assert listed.refusal(loopback) is None
    assert listed.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert listed.refusal(ipaddress.ip_address("10.1.9.9")) is None
    assert listed.refusal(ipaddress.ip_address("10.2.0.1")) == "private"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "http:///nohost", "https://user:pw@example.com/", "http://[::1"],
)
def test_urls_that_are_not_webhook_targets(url: str) -> None:
    with pytest.raises(guard.TargetRefused):
        guard.parse_url(url)


@pytest.mark.asyncio
async def test_check_refuses_a_literal_loopback_address() -> None:
    with pytest.raises(guard.TargetRefused, match="loopback"):
        await guard.check("http://127.0.0.1:9/hook", guard.Policy())
    target = await guard.check("http://127.0.0.1:9/hook", guard.Policy(allow_private=True))
    assert (target.host, target.port) == ("127.0.0.1", 9)


@pytest.mark.asyncio
async def test_check_resolves_names() -> None:
    with pytest.raises(guard.TargetRefused, match="loopback"):
        await guard.check("http://localhost:8080/", guard.Policy())


# -- signature -----------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"x"}'
    # Computed independently: printf '1700000000.{"id":"x"}' | openssl dgst -sha256 -hmac s3cret
    expected = (
        "v1=" + __import__("hmac").new(b"s3cret", b'1700000000.{"id":"x"}', "sha256").hexdigest()
    )
    assert signing.sign("s3cret", 1700000000, body) == expected
    assert signing.verify("s3cret", 1700000000, body, expected)
    assert not signing.verify("s3cret", 1700000001, body, expected)
    assert not signing.verify("other", 1700000000, body, expected)
    headers = signing.headers("s3cret", "ev-1", 1700000000, body)
    assert headers["X-NextFlow-Event-Id"] == "ev-1"
    assert headers["X-NextFlow-Timestamp"] == "1700000000"
    assert headers["X-NextFlow-Signature"] == expected


def test_body_has_the_documented_fields() -> None:
    event = Event(
        id=uuid.uuid4(),
        type="deal.won",
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        aggregate_type="deal",
        aggregate_id=12,
        data={"deal": {"id": "12"}},
    )
    import orjson

    assert orjson.loads(event_body(event)) == {
        "id": str(event.id),
        "type": "deal.won",
        "occurred_at": "2026-01-02T03:04:05+00:00",
        "data": {"deal": {"id": "12"}},
    }


# -- filters and input ---------------------------------------------------------------
def test_event_type_patterns() -> None:
    assert matches(["*"], "deal.won")
    assert matches(["deal.*"], "deal.won")
    assert matches(["ticket.assigned", "deal.won"], "deal.won")
    assert not matches(["deal.*"], "ticket.assigned")
    assert not matches(["deal.won"], "deal.lost")


def test_webhook_input_validation() -> None:
    made = WebhookCreate(url="https://example.com/h", event_types=["deal.*", "deal.*", "*"])
    assert made.event_types == ["*", "deal.*"]
    for bad in (["Deal.won"], ["deal.[ab]"], [], ["deal..won"], ["deal?"]):
        with pytest.raises(ValidationError):
            WebhookCreate(url="https://example.com/h", event_types=bad)
    with pytest.raises(ValidationError):
        WebhookCreate(url="https://example.com/h", event_types=["*"], secret="mine")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        WebhookUpdate(active=None)
    assert WebhookUpdate(active=True).model_dump(exclude_unset=True) == {"active": True}


# -- one attempt -----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_an_attempt_goes_to_the_checked_address_and_never_follows_redirects() -> None:
    from deployments.webhooks import sender

    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        attempt = await sender.send(
            client,
            guard.Policy(allow_private=True),
            "http://localhost:8080/in?a=b",
            "s3cret",
            "ev-1",
            b"{}",
            now=1700000000,
        )
        refused = await sender.send(
            client, guard.Policy(), "http://localhost:8080/in", "s3cret", "ev-1", b"{}"
        )
    assert (attempt.status_code, attempt.succeeded) == (302, False)
    assert len(seen) == 1  # the redirect was not followed
    request = seen[0]
    assert request.url.host in ("127.0.0.1", "::1")  # pinned to the checked address
    assert request.url.path == "/in" and request.url.query == b"a=b"
    assert request.headers["Host"] == "localhost:8080"
    assert signing.verify("s3cret", 1700000000, b"{}", request.headers["X-NextFlow-Signature"])
    assert refused.refused and refused.error and "loopback" in refused.error
