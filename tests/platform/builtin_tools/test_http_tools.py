"""``http_request`` and ``lookup_order`` against real loopback servers, through a registry:
allowlists at both levels, size and time limits, no redirects, quoting, auth, fencing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow.kernel.tools import ToolCaller, ToolRegistry
from tests.platform.builtin_tools.conftest import SECRETS, granted, registry_for
from tests.platform.builtin_tools.fakes import FakeServer


@pytest.fixture
def web(site: FakeServer, operator_allows: Any) -> ToolRegistry:
    operator_allows(site.url)
    return registry_for(
        {"http_request": {"allowed_hosts": [f"{site.url}/"], "max_bytes": 10_000, "timeout": 1}}
    )


async def test_http_request_gets_an_allowed_url(web: ToolRegistry, site: FakeServer) -> None:
    outcome = await web.invoke(
        "http_request", {"url": f"{site.url}/status", "query": {"region": "eu"}},
        caller=granted(web, "read"),
    )  # fmt: skip
    assert outcome.ok, outcome
    assert outcome.output == {
        "url": f"{site.url}/status",
        "body": {"status": "operational", "query": "region=eu"},
    }
    both = await web.invoke(
        "http_request", {"url": f"{site.url}/status?page=2", "query": {"region": "eu"}},
        caller=granted(web),
    )  # fmt: skip
    assert both.output["body"]["query"] == "page=2&region=eu"
    own = await web.invoke(
        "http_request", {"url": f"{site.url}/status?page=3"}, caller=granted(web)
    )
    assert own.output["body"]["query"] == "page=3"
    text = await web.invoke("http_request", {"url": f"{site.url}/text"}, caller=granted(web))
    assert "all systems go" in text.output["body"]
    assert [seen.method for seen in site.seen] == ["GET"] * 4


async def test_http_request_refuses_hosts_outside_the_allowlist(
    web: ToolRegistry, site: FakeServer, operator_allows: Any
) -> None:
    caller = granted(web)
    port = int(site.url.rsplit(":", 1)[1])
    for url in (
        f"http://localhost:{port}/status",  # same server, another name: not on the list
        f"{site.url}.evil.example/status",
        f"http://127.0.0.1:{port + 1}/status",
        f"http://evil.example@127.0.0.1:{port}/status",
    ):
        outcome = await web.invoke("http_request", {"url": url}, caller=caller)
        assert outcome.status == "error", url
        assert "is not" in (outcome.error or "")
        assert "allowed" in (outcome.error or "").lower()
    # Under the operator's prefix but not the agent's own: refused as well.
    narrow = registry_for({"http_request": {"allowed_hosts": [f"{site.url}/status"]}})
    text = await narrow.invoke("http_request", {"url": f"{site.url}/text"}, caller=granted(narrow))
    assert text.status == "error"
    assert "is not an allowed URL" in (text.error or "")
    # The operator withdraws the host: settings validated earlier do not keep it reachable.
    operator_allows("https://elsewhere.example")
    withdrawn = await web.invoke("http_request", {"url": f"{site.url}/status"}, caller=caller)
    assert withdrawn.status == "error"
    assert "TOOL_ALLOWED_URLS" in (withdrawn.error or "")
    assert site.seen == []


async def test_http_request_limits_size_time_and_redirects(
    web: ToolRegistry, site: FakeServer
) -> None:
    caller = granted(web)
    big = await web.invoke("http_request", {"url": f"{site.url}/big"}, caller=caller)
    assert big.status == "error"
    assert "larger than 10000 bytes" in (big.error or "")
    started = time.monotonic()
    slow = await web.invoke("http_request", {"url": f"{site.url}/slow"}, caller=caller)
    assert slow.status == "timeout"
    assert time.monotonic() - started < 2.5  # the 1 s limit, not the server's 3 s
    moved = await web.invoke("http_request", {"url": f"{site.url}/redirect"}, caller=caller)
    assert moved.status == "error"
    assert "not followed" in (moved.error or "")
    missing = await web.invoke("http_request", {"url": f"{site.url}/nope"}, caller=caller)
    assert missing.status == "error"
    assert "HTTP 404" in (missing.error or "")


async def test_http_request_posts_only_when_allowed_and_approved(
    site: FakeServer, operator_allows: Any
) -> None:
    operator_allows(site.url)
    get_only = registry_for({"http_request": {"allowed_hosts": [site.url]}})
    refused = await get_only.invoke(
        "http_request", {"url": f"{site.url}/echo", "method": "POST", "body": {"a": 1}},
        caller=granted(get_only),
    )  # fmt: skip
    assert refused.status == "invalid_arguments"
    assert "$.method" in (refused.error or "")
    posting = registry_for({"http_request": {"allowed_hosts": [site.url], "allow_post": True}})
    arguments = {"url": f"{site.url}/echo", "method": "POST", "body": {"a": 1}}
    proposed = await posting.invoke("http_request", arguments, caller=granted(posting))
    assert proposed.status == "needs_approval"
    assert site.seen == []
    done = await posting.invoke("http_request", arguments, caller=granted(posting), approved=True)
    assert done.ok, done
    assert done.output["body"] == {"received": {"a": 1}}


async def test_http_request_arguments_are_checked_before_anything_is_sent(
    web: ToolRegistry, site: FakeServer
) -> None:
    caller = granted(web)
    for arguments, field in (
        ({}, "$.url"),
        ({"url": f"{site.url}/status", "headers": {"Authorization": "x"}}, "headers"),
        ({"url": f"{site.url}/status", "query": {"nested": {"a": 1}}}, "$.query.nested"),
        ({"url": 42}, "$.url"),
    ):
        outcome = await web.invoke("http_request", arguments, caller=caller)
        assert outcome.status == "invalid_arguments", arguments
        assert field in (outcome.error or "")
    ungranted = await web.invoke(
        "http_request", {"url": f"{site.url}/status"}, caller=ToolCaller.of([], "execute")
    )
    assert ungranted.status == "denied"
    assert site.seen == []


# ----------------------------------------------------------------------------- lookup_order


@pytest.fixture
def orders(shop: FakeServer, operator_allows: Any) -> ToolRegistry:
    operator_allows(f"{shop.url}/api")
    return registry_for(
        {
            "lookup_order": {
                "url_template": f"{shop.url}/api/orders/{{order_id}}",
                "headers": {"Authorization": "Bearer ${SHOP_TOKEN}", "Accept": "application/json"},
                "max_bytes": 50_000,
                "timeout": 1,
            }
        }
    )


async def test_lookup_order_finds_the_order_with_the_shops_credential(
    orders: ToolRegistry, shop: FakeServer
) -> None:
    outcome = await orders.invoke("lookup_order", {"order_id": "A-1001"}, caller=granted(orders))
    assert outcome.ok, outcome
    assert outcome.output["order"]["status"] == "shipped"
    assert outcome.output["order"]["total"] == 42.5
    assert shop.seen[0].path == "/api/orders/A-1001"
    assert shop.seen[0].headers["authorization"] == f"Bearer {SECRETS['SHOP_TOKEN']}"
    # The order's text is data: the injection and the fake fence end are neutralised.
    note = outcome.output["order"]["note"]
    assert "suspected injection" in note
    assert "<<<END UNTRUSTED" not in note


async def test_lookup_order_ids_cannot_leave_the_path(
    orders: ToolRegistry, shop: FakeServer
) -> None:
    for order_id in ("../admin", "A/../../x", "..", "A 1", "A?x=1", ""):
        outcome = await orders.invoke(
            "lookup_order", {"order_id": order_id}, caller=granted(orders)
        )
        assert outcome.status == "invalid_arguments", order_id
        assert "$.order_id" in (outcome.error or "")
    assert shop.seen == []


async def test_lookup_order_errors_are_outcomes(
    orders: ToolRegistry, shop: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = granted(orders)
    missing = await orders.invoke("lookup_order", {"order_id": "MISSING"}, caller=caller)
    assert missing.status == "error"
    assert "HTTP 404" in (missing.error or "")
    huge = await orders.invoke("lookup_order", {"order_id": "HUGE"}, caller=caller)
    assert huge.status == "error"
    assert "larger than 50000 bytes" in (huge.error or "")
    slow = await orders.invoke("lookup_order", {"order_id": "SLOW"}, caller=caller)
    assert slow.status == "timeout"
    monkeypatch.delenv("SHOP_TOKEN")
    unset = await orders.invoke("lookup_order", {"order_id": "A-1"}, caller=caller)
    assert unset.status == "error"
    assert "no value for ${SHOP_TOKEN}" in (unset.error or "")
    assert len(shop.seen) == 3  # the call without its secret was never sent
