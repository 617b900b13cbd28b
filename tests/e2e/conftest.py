"""The real app on localhost, a real Celery worker and a real headless Chromium.

- ``live_url``: the ASGI app (Django + DRF + Channels) under uvicorn, started once for
  these tests as ``make run`` starts it, in a subprocess pointed at pytest-django's test
  database and the session's embedded Redis. Tests use ``transactional_db`` so the server
  sees what they commit; the server's own writes are committed too.
- Runs go through the ``celery_worker_app`` fixture (a real worker, in threads of this
  process) exactly as in tests/platform/api.
- ``ui``: Chromium (the system's /usr/bin/chromium, never a downloaded browser) driven by
  Playwright in a thread of its own. Playwright's sync API keeps an asyncio loop marked as
  running in the thread that uses it, and Django refuses ORM calls in such a thread; so
  the browser lives in its own thread and tests hold proxies whose calls hop there. The
  test thread stays a plain sync thread for the ORM and for the rest of the suite.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from agentflow.server.run import UVICORN_HTTP_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000  # one UI expectation; live updates take milliseconds, a slow CI seconds


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        hint = "run `make test` as root to install it" if os.geteuid() != 0 else "apt-get failed?"
        return f"no Chromium at {CHROMIUM} ({hint}); browser tests skipped"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]'); browser tests skipped"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = _skip_reason()
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            if reason and "browser_thread" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.skip(reason=reason))


# --- the server ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _test_database_url() -> str:
    from django.conf import settings

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


# Package scope: the server and the browser stop when the browser tests are done, rather
# than idling through the rest of the suite.
@pytest.fixture(scope="package")
def live_url(django_db_setup: None) -> Iterator[str]:
    """Base URL of the app served by uvicorn, on the test database."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",  # the suite's warnings-as-errors is for our process
    }
    log_path = Path(os.environ.get("AGENTFLOW_HOME", "/tmp")) / f"e2e-web-{port}.log"
    log = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "agentflow.server.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--no-access-log",
            *UVICORN_HTTP_OPTIONS,  # as make run serves it
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {log_path.read_text(encoding='utf-8')}")
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn not up in 60 s: {log_path.read_text('utf-8')}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- the browser, in a thread of its own ----------------------------------------------


class BrowserThread:
    """Runs every Playwright call in one dedicated thread (see the module docstring)."""

    def __init__(self) -> None:
        self._calls: queue.Queue[Any] = queue.Queue()
        self._ready = concurrent.futures.Future[Any]()
        self._thread = threading.Thread(target=self._main, name="playwright", daemon=True)
        self._thread.start()
        self.browser = Remote(self, self._ready.result(timeout=60))

    def _main(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--disable-dev-shm-usage"]
            )
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(browser)
        while (item := self._calls.get()) is not None:
            function, args, kwargs, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
        browser.close()
        playwright.stop()

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = concurrent.futures.Future[Any]()
        self._calls.put((function, args, kwargs, future))
        return future.result(timeout=120)

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(30)


def _is_playwright(value: Any) -> bool:
    return type(value).__module__.startswith("playwright.")


def _unwrap(value: Any) -> Any:
    if isinstance(value, Remote):
        return object.__getattribute__(value, "_target")
    if isinstance(value, list | tuple):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


class Remote:
    """A Playwright object living in the browser thread; attribute access and calls hop."""

    def __init__(self, thread: BrowserThread, target: Any) -> None:
        object.__setattr__(self, "_thread", thread)
        object.__setattr__(self, "_target", target)

    def _wrap(self, value: Any) -> Any:
        thread = object.__getattribute__(self, "_thread")
        if _is_playwright(value):
            return Remote(thread, value)
        if isinstance(value, list):
            return [Remote(thread, v) if _is_playwright(v) else v for v in value]
        return value

    def __getattr__(self, name: str) -> Any:
        thread: BrowserThread = object.__getattribute__(self, "_thread")
        target = object.__getattribute__(self, "_target")
        value = thread.call(getattr, target, name)
        if callable(value) and not _is_playwright(value):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self._wrap(thread.call(value, *_unwrap(args), **_unwrap(kwargs)))

            return call
        return self._wrap(value)

    def __repr__(self) -> str:
        return f"Remote({object.__getattribute__(self, '_target')!r})"


@pytest.fixture(scope="package")
def browser_thread() -> Iterator[BrowserThread]:
    thread = BrowserThread()
    yield thread
    thread.close()


# --- what tests use ---------------------------------------------------------------------


@dataclass
class UI:
    """Opens signed-in tabs on the live app and keeps screenshots."""

    thread: BrowserThread
    base: str
    contexts: list[Any]
    clients: list[httpx.Client] = field(default_factory=list)

    def http(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client on the live app (closed after the test)."""
        client = httpx.Client(base_url=self.base, timeout=30, **kwargs)
        self.clients.append(client)
        return client

    def new_page(self) -> Any:
        context = self.thread.browser.new_context(viewport=VIEWPORT, base_url=self.base)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        return context.new_page()

    def signed_in(self, user: Any) -> Any:
        """A tab with ``user``'s session cookie (made here, as the login form would)."""
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        page = self.new_page()
        page.context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": self.base}]
        )
        return page

    def login(self, username: str, password: str, next_path: str = "/") -> Any:
        """A tab signed in through the login form, as a person does it."""
        page = self.new_page()
        page.goto(f"/login/?next={next_path}")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"**{next_path}")
        return page

    def screenshot(self, page: Any, name: str) -> None:
        """Into test-artifacts/screenshots/, and docs/screenshots/ with UPDATE_SCREENSHOTS=1."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(target), full_page=False)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, DOCS_SCREENSHOTS / f"{name}.png")

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()
        for client in self.clients:
            client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def ui(
    request: pytest.FixtureRequest,
    browser_thread: BrowserThread,
    live_url: str,
    transactional_db: None,
) -> Iterator[UI]:
    tabs = UI(browser_thread, live_url, [])
    yield tabs
    if request.node.stash.get(_CALL_FAILED, False):
        # What every tab showed when the test failed: CI keeps test-artifacts/.
        failures = ARTIFACTS.parent / "failures"
        failures.mkdir(parents=True, exist_ok=True)
        for number, page in enumerate(p for c in tabs.contexts for p in c.pages):
            page.screenshot(path=str(failures / f"{request.node.name}-{number}.png"))
    tabs.close()


def page_exists(base: str, path: str, cookies: dict[str, str] | None = None) -> bool:
    """False when the path answers 404: for steps written against pages not built yet."""
    response = httpx.get(f"{base}{path}", cookies=cookies, follow_redirects=False, timeout=10)
    return response.status_code != 404


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")
