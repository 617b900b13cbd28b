"""The API operations the client offers, as :class:`Call` values (docs/api.md)."""

from __future__ import annotations

from typing import Any

from agentflow.client._protocol import Call


def _page(limit: int | None, offset: int | None, **filters: Any) -> dict[str, Any]:
    return {"limit": limit, "offset": offset, **filters}


def create_agent(name: str, blueprint: str, config: dict[str, Any] | None) -> Call:
    body = {"name": name, "blueprint": blueprint, "config": config or {}}
    return Call("POST", "agents", body=body, creates=True)


def list_agents(limit: int | None, offset: int | None) -> Call:
    return Call("GET", "agents", params=_page(limit, offset), safe=True)


def get_agent(agent_id: str) -> Call:
    return Call("GET", f"agents/{agent_id}", safe=True)


def add_knowledge(agent_id: str, title: str, content: str, content_type: str) -> Call:
    body = {"title": title, "content": content, "content_type": content_type}
    return Call("POST", f"agents/{agent_id}/knowledge", body=body, creates=True)


def send_message(
    agent_id: str,
    user_id: str,
    message: str,
    *,
    priority: str | None,
    metadata: dict[str, Any] | None,
    wait: float | None,
    respond_async: bool,
) -> Call:
    body: dict[str, Any] = {"user_id": user_id, "message": message}
    if priority is not None:
        body["priority"] = priority
    if metadata is not None:
        body["metadata"] = metadata
    prefer = "respond-async" if respond_async else None
    if wait is not None and not respond_async:
        prefer = f"wait={wait:g}"
    headers = {"Prefer": prefer} if prefer else {}
    return Call("POST", f"agents/{agent_id}/runs", body=body, headers=headers, creates=True)


def get_run(run_id: str) -> Call:
    return Call("GET", f"runs/{run_id}", safe=True)


def poll(url: str) -> Call:
    return Call("GET", url, safe=True)


def conversation(session_id: str, limit: int | None, offset: int | None) -> Call:
    params = _page(limit, offset)
    return Call("GET", f"sessions/{session_id}/conversation", params=params, safe=True)


def send_feedback(
    run_id: str,
    *,
    rating: int | None,
    thumbs: str | None,
    comment: str | None,
    message_id: str | None,
) -> Call:
    body: dict[str, Any] = {"run_id": run_id}
    extra = {"rating": rating, "thumbs": thumbs, "comment": comment, "message_id": message_id}
    body.update({key: value for key, value in extra.items() if value is not None})
    return Call("POST", "learning/feedback", body=body, creates=True)


def list_feedback(run_id: str | None, limit: int | None, offset: int | None) -> Call:
    params = _page(limit, offset, run_id=run_id)
    return Call("GET", "learning/feedback", params=params, safe=True)


def review_queue(
    status: str | None, priority: str | None, limit: int | None, offset: int | None
) -> Call:
    params = _page(limit, offset, status=status, priority=priority)
    return Call("GET", "hitl/queue", params=params, safe=True)


def get_review(request_id: str) -> Call:
    return Call("GET", f"hitl/queue/{request_id}", safe=True)


def decide_review(request_id: str, decision: str, response: str | None, reason: str | None) -> Call:
    body: dict[str, Any] = {"decision": decision}
    if response is not None:
        body["response"] = response
    if reason is not None:
        body["reason"] = reason
    return Call("POST", f"hitl/queue/{request_id}/respond", body=body, creates=True)


def create_webhook_endpoint(provider: str, name: str | None, secret: str | None) -> Call:
    body = {"provider": provider, "name": name, "secret": secret}
    # No Idempotency-Key on endpoints (the server would have to store the shown-once secret):
    # a transport failure is raised, not resent.
    return Call("POST", "webhooks/endpoints", body={k: v for k, v in body.items() if v})


def list_webhook_endpoints(limit: int | None, offset: int | None) -> Call:
    return Call("GET", "webhooks/endpoints", params=_page(limit, offset), safe=True)


def get_webhook_endpoint(endpoint_id: str) -> Call:
    return Call("GET", f"webhooks/endpoints/{endpoint_id}", safe=True)


def rotate_webhook_secret(
    endpoint_id: str, secret: str | None, overlap_seconds: int | None
) -> Call:
    body = {"secret": secret, "overlap_seconds": overlap_seconds}
    path = f"webhooks/endpoints/{endpoint_id}/rotate"
    return Call("POST", path, body={k: v for k, v in body.items() if v is not None})


def delete_webhook_endpoint(endpoint_id: str) -> Call:
    return Call("DELETE", f"webhooks/endpoints/{endpoint_id}")


def agent_usage(days: int | None, agent_id: str | None) -> Call:
    path = f"agents/{agent_id}/usage" if agent_id is not None else "usage/agents"
    return Call("GET", path, params={"days": days}, safe=True)
