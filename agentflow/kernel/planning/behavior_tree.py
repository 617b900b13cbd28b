"""The behavior-tree planner: one tick of the tree over the plan state.

Node types: ``sequence`` (children in order, stops at the first that does not succeed),
``selector`` (stops at the first success), ``parallel`` (children concurrently;
``success_policy`` ``all``, ``any`` or a count), ``condition`` (``check`` or ``expression``,
CEL), ``action`` (``step``, ``tool`` + ``arguments`` or ``agent``; optional ``timeout``) and
``conditional_selector`` (``conditions: [{expression, child}, ..., {default: true, child}]``).

A node that pauses (an action needing a human) pauses its ancestors; the run returns a
snapshot whose ``memo`` holds the actions that already finished. Resuming ticks the tree again
from the root with those actions answered from the memo, the paused one answered by the
human's decision, so nothing runs twice and the rest of the tree continues.

Parallel children run concurrently; their records are appended in child order so the path
does not depend on which finished first. Children of one parallel node should write
different state keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentflow.kernel.planning.expressions import CompiledExpression, ExpressionEvalError
from agentflow.kernel.planning.model import (
    Action,
    PlanResult,
    PlanState,
    Snapshot,
    StepExecutor,
    StepOutcome,
    StepRecord,
    ToolInvoker,
)
from agentflow.kernel.planning.parsing import MISSING, Errors, Known, parse_action, parse_timeout
from agentflow.kernel.planning.runtime import (
    ActionRunner,
    AlreadyResumed,
    InMemoryResumeLedger,
    Replanner,
    ResumeError,
    ResumeLedger,
    digest,
    trigger_of,
)
from agentflow.kernel.planning.source import MDict, PlanValidationError, Pos, pos_of

__all__ = ["BTNode", "BehaviorTreePlan", "load_behavior_tree"]

Result = Literal["success", "failure", "paused"]
DEFAULT_MAX_STEPS = 200
_TYPES = {"sequence", "selector", "parallel", "condition", "action", "conditional_selector"}
_COMMON = {"type", "name", "description"}
_KEYS = {
    "sequence": {"children"},
    "selector": {"children"},
    "parallel": {"children", "success_policy"},
    "condition": {"check", "expression"},
    "action": {"step", "tool", "agent", "human", "arguments", "timeout"},
    "conditional_selector": {"conditions"},
}


@dataclass(slots=True)
class BTNode:
    id: str
    type: str
    name: str
    pos: Pos
    children: list[BTNode] = field(default_factory=list)
    success_policy: int | str = "all"
    condition: CompiledExpression | None = None
    action: Action | None = None
    timeout: float | None = None
    # conditional_selector: (expression or None for the default, child)
    branches: list[tuple[CompiledExpression | None, BTNode]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or self.id

    def walk(self) -> list[BTNode]:
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        for _, child in self.branches:
            found.extend(child.walk())
        return found

    def normalised(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "policy": self.success_policy if self.type == "parallel" else None,
            "condition": self.condition.source if self.condition else None,
            "action": self.action.describe() if self.action else None,
            "timeout": self.timeout,
            "children": [c.normalised() for c in self.children],
            "branches": [[e.source if e else None, c.normalised()] for e, c in self.branches],
        }


def load_behavior_tree(data: Any, *, known: Known | None = None) -> BehaviorTreePlan:
    errors = Errors()
    root: BTNode | None = None
    max_steps = DEFAULT_MAX_STEPS
    if not isinstance(data, Mapping) or "root" not in data:
        errors.add("a behavior tree is a mapping with a `root` node", getattr(data, "pos", Pos()))
    else:
        for key in sorted(set(data) - {"root", "name", "description", "max_steps"}):
            errors.add(f"unknown key `{key}` in a behavior tree", pos_of(data, key), key)
        root = _parse_node(data["root"], "root", pos_of(data, "root"), errors, known or Known())
        raw_max = data.get("max_steps", DEFAULT_MAX_STEPS)
        if isinstance(raw_max, int) and not isinstance(raw_max, bool) and raw_max > 0:
            max_steps = raw_max
        else:
            errors.add("`max_steps` must be a positive integer", pos_of(data, "max_steps"))
    if errors or root is None:
        raise PlanValidationError(errors.items)
    return BehaviorTreePlan(root, max_steps)


def _parse_node(raw: Any, node_id: str, pos: Pos, errors: Errors, known: Known) -> BTNode:
    if not isinstance(raw, Mapping):
        errors.add(f"node `{node_id}` must be a mapping with a `type`", pos, node_id)
        return BTNode(node_id, "invalid", "", pos)
    pos = getattr(raw, "pos", pos) or pos
    kind = raw.get("type")
    if kind not in _TYPES:
        errors.add(
            f"node `{node_id}`: unknown type `{kind}` (one of {', '.join(sorted(_TYPES))})",
            pos_of(raw, "type") if "type" in raw else pos,
            node_id,
        )
        return BTNode(node_id, "invalid", "", pos)
    name = str(raw.get("name") or "")
    node = BTNode(node_id, kind, name, pos)
    label = f"{kind} `{name or node_id}`"
    for key in sorted(set(raw) - _COMMON - _KEYS[kind]):
        errors.add(f"{label}: unknown key `{key}`", pos_of(raw, key), f"{node_id}.{key}")
    if kind in ("sequence", "selector", "parallel"):
        children = raw.get("children")
        if not isinstance(children, list) or not children:
            errors.add(f"{label} has no children", pos_of(raw, "children"), node_id)
            children = []
        for index, child in enumerate(children):
            child_id = f"{node_id}.children[{index}]"
            node.children.append(
                _parse_node(child, child_id, pos_of(children, index), errors, known)
            )
        if kind == "parallel":
            node.success_policy = _policy(raw, len(node.children), label, errors, node_id)
    elif kind == "condition":
        keys = [k for k in ("check", "expression") if k in raw]
        if len(keys) != 1:
            errors.add(f"{label}: needs one `check` (a CEL condition)", pos, node_id)
        else:
            where = raw.value_at(keys[0]) if isinstance(raw, MDict) else pos
            node.condition = errors.expression(raw[keys[0]], f"{label}: condition", where, node_id)
    elif kind == "action":
        action_keys = ("step", "tool", "agent", "human", "arguments")
        spec = MDict({k: raw[k] for k in action_keys if k in raw})
        if isinstance(raw, MDict):
            spec.pos, spec.key_pos, spec.value_pos = raw.pos, raw.key_pos, raw.value_pos
        node.action = parse_action(
            spec if spec else MISSING,
            default_step=None,
            errors=errors,
            known=known,
            pos=_ActionPos(raw, pos).best(),
            path=node_id,
            owner=label,
        )
        where = raw.value_at("timeout") if isinstance(raw, MDict) else pos
        node.timeout = parse_timeout(raw.get("timeout"), errors, where, node_id)
    else:
        _parse_branches(node, raw, label, errors, known)
    return node


class _ActionPos:
    def __init__(self, raw: Any, pos: Pos) -> None:
        self.raw = raw
        self.pos = pos

    def best(self) -> Pos:
        for key in ("tool", "agent", "step"):
            if isinstance(self.raw, MDict) and key in self.raw:
                return self.raw.value_at(key)
        return self.pos


def _policy(raw: Any, count: int, label: str, errors: Errors, node_id: str) -> int | str:
    policy = raw.get("success_policy", "all")
    if policy in ("all", "any"):
        return str(policy)
    if isinstance(policy, int) and not isinstance(policy, bool) and 1 <= policy <= max(count, 1):
        return policy
    errors.add(
        f"{label}: success_policy `{policy}` must be all, any or a count from 1 to {count}",
        pos_of(raw, "success_policy"),
        node_id,
    )
    return "all"


def _parse_branches(node: BTNode, raw: Any, label: str, errors: Errors, known: Known) -> None:
    items = raw.get("conditions")
    if not isinstance(items, list) or not items:
        errors.add(f"{label} has no conditions", pos_of(raw, "conditions"), node.id)
        return
    for index, item in enumerate(items):
        item_id = f"{node.id}.conditions[{index}]"
        item_pos = pos_of(items, index)
        if not isinstance(item, Mapping) or "child" not in item:
            errors.add(f"{label}: each condition has a `child`", item_pos, item_id)
            continue
        child = _parse_node(item["child"], f"{item_id}.child", pos_of(item, "child"), errors, known)
        if item.get("default") is True:
            if index != len(items) - 1:
                errors.add(f"{label}: the `default` branch must come last", item_pos, item_id)
            node.branches.append((None, child))
            continue
        if "expression" not in item:
            errors.add(
                f"{label}: a branch needs `expression` or `default: true`", item_pos, item_id
            )
            continue
        where = item.value_at("expression") if isinstance(item, MDict) else item_pos
        compiled = errors.expression(item["expression"], f"{label}: condition", where, item_id)
        if compiled is not None:
            node.branches.append((compiled, child))


# -------------------------------------------------------------------------- running


class _Abort(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class BehaviorTreePlan:
    root: BTNode
    max_steps: int = DEFAULT_MAX_STEPS
    kind: str = "behavior_tree"

    @property
    def normalised(self) -> dict[str, Any]:
        return {"root": self.root.normalised(), "max_steps": self.max_steps}

    @property
    def digest(self) -> str:
        return digest(self.normalised)

    def summary(self) -> str:
        nodes = self.root.walk()
        actions = sum(1 for n in nodes if n.type == "action")
        return f"behavior_tree: {len(nodes)} nodes, {actions} actions"

    def actions(self) -> list[tuple[str, Action]]:
        return [(n.label, n.action) for n in self.root.walk() if n.action is not None]

    async def run(
        self,
        state: PlanState,
        executor: StepExecutor | None = None,
        *,
        tools: ToolInvoker | None = None,
        replanner: Replanner | None = None,
        clock: Callable[[], float] | None = None,
    ) -> PlanResult:
        runner = (
            ActionRunner(executor, tools)
            if clock is None
            else ActionRunner(executor, tools, clock=clock)
        )
        return await _Tick(self, runner, replanner, state, {}, None).go()

    async def resume(
        self,
        snapshot: Snapshot,
        decision: StepOutcome,
        executor: StepExecutor | None = None,
        *,
        tools: ToolInvoker | None = None,
        ledger: ResumeLedger | None = None,
        replanner: Replanner | None = None,
        clock: Callable[[], float] | None = None,
    ) -> PlanResult:
        if snapshot.planner != self.kind or snapshot.plan_digest != self.digest:
            raise ResumeError("the snapshot belongs to another plan")
        if snapshot.node not in {n.id for n in self.root.walk()}:
            raise ResumeError(f"the tree has no node `{snapshot.node}`")
        if not (ledger or _LEDGER).claim(snapshot.token):
            raise AlreadyResumed(f"snapshot {snapshot.token} was already resumed")
        runner = (
            ActionRunner(executor, tools)
            if clock is None
            else ActionRunner(executor, tools, clock=clock)
        )
        tick = _Tick(
            self, runner, replanner, PlanState.from_dict(snapshot.data), dict(snapshot.memo),
            (snapshot.node, decision),
        )  # fmt: skip
        tick.steps = snapshot.steps_taken
        return await tick.go()


_LEDGER = InMemoryResumeLedger()


class _Tick:
    def __init__(
        self,
        plan: BehaviorTreePlan,
        runner: ActionRunner,
        replanner: Replanner | None,
        state: PlanState,
        memo: dict[str, str],
        resume: tuple[str, StepOutcome] | None,
    ) -> None:
        self.plan = plan
        self.runner = runner
        self.replanner = replanner
        self.state = state
        self.memo = memo
        self.resume = resume
        self.steps = 0
        self.paused: list[str] = []

    async def go(self) -> PlanResult:
        path: list[StepRecord] = []
        try:
            result = await self.tick(self.plan.root, path)
        except _Abort as exc:
            return self._finish("failed", path, str(exc))
        if result == "paused":
            node = self.paused[0]
            snapshot = Snapshot(
                "behavior_tree", node, self.state.to_dict(), uuid.uuid4().hex,
                self.plan.digest, self.steps, dict(self.memo),
            )  # fmt: skip
            finished = self._finish("paused", path, None)
            finished.node = node
            finished.snapshot = snapshot
            return finished
        status = "completed" if result == "success" else "failed"
        return self._finish(status, path, None if result == "success" else "the tree failed")

    def _finish(self, status: str, path: list[StepRecord], error: str | None) -> PlanResult:
        for index, record in enumerate(path):
            record.index = index
        return PlanResult(status, self.plan.root.label, path, self.state, None, error)  # type: ignore[arg-type]

    async def tick(self, node: BTNode, path: list[StepRecord]) -> Result:
        if node.type == "sequence":
            for child in node.children:
                result = await self.tick(child, path)
                if result != "success":
                    return result
            return "success"
        if node.type == "selector":
            for child in node.children:
                result = await self.tick(child, path)
                if result != "failure":
                    return result
            return "failure"
        if node.type == "parallel":
            return await self._parallel(node, path)
        if node.type == "condition":
            return self._condition(node, path)
        if node.type == "conditional_selector":
            return await self._branch(node, path)
        return await self._action(node, path)

    async def _parallel(self, node: BTNode, path: list[StepRecord]) -> Result:
        buffers: list[list[StepRecord]] = [[] for _ in node.children]
        results = await asyncio.gather(
            *(
                self.tick(child, buffer)
                for child, buffer in zip(node.children, buffers, strict=True)
            )
        )
        for buffer in buffers:
            path.extend(buffer)
        need = len(node.children) if node.success_policy == "all" else 1
        if isinstance(node.success_policy, int):
            need = node.success_policy
        successes = results.count("success")
        if successes >= need:
            return "success"
        if successes + results.count("paused") >= need:
            return "paused"
        return "failure"

    def _record(
        self, path: list[StepRecord], node: BTNode, action: dict[str, Any], **kw: Any
    ) -> StepRecord:
        now = self.runner.clock()
        record = StepRecord(len(path), node.label, action, kw.pop("status"), now, now, **kw)
        path.append(record)
        return record

    def _test(self, expression: CompiledExpression) -> bool:
        try:
            return expression.test(self.state.variables())
        except ExpressionEvalError as exc:
            raise _Abort("failed", f"condition: {exc}") from exc

    def _condition(self, node: BTNode, path: list[StepRecord]) -> Result:
        assert node.condition is not None
        holds = self._test(node.condition)
        result: Result = "success" if holds else "failure"
        self._record(
            path, node, {"condition": node.condition.source}, status="ok",
            transition=result, via="condition", condition=node.condition.source,
        )  # fmt: skip
        return result

    async def _branch(self, node: BTNode, path: list[StepRecord]) -> Result:
        for index, (expression, child) in enumerate(node.branches):
            if expression is None or self._test(expression):
                via = "default" if expression is None else f"conditions[{index}]"
                self._record(
                    path, node, {"select": via}, status="ok", transition=child.label, via=via,
                    condition=expression.source if expression else None,
                )  # fmt: skip
                return await self.tick(child, path)
        self._record(path, node, {"select": None}, status="ok", transition=None, via="none")
        return "failure"

    async def _action(self, node: BTNode, path: list[StepRecord]) -> Result:
        assert node.action is not None
        if node.id in self.memo:
            return "success" if self.memo[node.id] == "success" else "failure"
        attempt = 1
        while True:
            started = self.runner.clock()
            if self.resume is not None and self.resume[0] == node.id:
                outcome = self.resume[1]
                self.resume = None
                action = {"resumed": True, **node.action.describe()}
            else:
                if self.steps >= self.plan.max_steps:
                    raise _Abort("failed", f"step limit {self.plan.max_steps}")
                self.steps += 1
                outcome = await self.runner.run(node.action, self.state, node.timeout, node.id)
                action = node.action.describe()
            record = StepRecord(
                len(path), node.label, action, outcome.status, started, self.runner.clock(),
                error=outcome.error, output=outcome.output, tokens=outcome.tokens,
                cost_usd=outcome.cost_usd, attempt=attempt,
            )  # fmt: skip
            path.append(record)
            if outcome.status == "paused":
                self.paused.append(node.id)
                return "paused"
            if outcome.status != "ok" and self.replanner is not None:
                decision = await self.replanner.decide(
                    trigger_of(outcome), node.label, outcome, attempt
                )
                record.via = decision.strategy if decision.strategy != "continue" else None
                if decision.strategy == "retry":
                    attempt += 1
                    if decision.delay_s > 0:
                        await asyncio.sleep(decision.delay_s)
                    continue
                if decision.strategy == "escalate":
                    self.paused.append(node.id)
                    return "paused"
                if decision.strategy == "fallback":
                    raise _Abort("failed", f"fallback: {outcome.error}")
            result: Result = "success" if outcome.status == "ok" else "failure"
            self.memo[node.id] = result
            record.transition = result
            return result
