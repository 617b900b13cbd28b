"""/api/docs/ works offline: Swagger UI comes from our static files (drf-spectacular-sidecar),
never from a CDN, in development (finders) and after production's collectstatic (manifest)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client


class _Assets(HTMLParser):
    """Every URL the page loads by itself: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def _docs_assets(client: Client) -> tuple[str, list[str]]:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    parser = _Assets()
    parser.feed(html)
    return html, parser.urls


def test_api_docs_page_loads_only_local_static_files(client: Client, settings: Any) -> None:
    html, urls = _docs_assets(client)

    assert "http://" not in html
    assert "https://" not in html
    # Swagger UI's bundle, its preset, its CSS and the favicon.
    assert len(urls) == 4, urls
    for url in urls:
        assert url.startswith(settings.STATIC_URL), url
        assert finders.find(url.removeprefix(settings.STATIC_URL)), f"{url} is not a static file"
    # The page's own script points Swagger UI at our schema, on this host.
    assert 'url: "/api/schema/"' in html


@pytest.mark.django_db
def test_api_docs_static_files_are_served(client: Client, settings: Any) -> None:
    _, urls = _docs_assets(client)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
        source = finders.find(url.removeprefix(settings.STATIC_URL))
        assert isinstance(source, str)
        assert body == Path(source).read_bytes(), url
    assert client.get("/api/schema/").status_code == 200


def test_collectstatic_in_production_storage_includes_swagger_ui(
    tmp_path: Path, settings: Any
) -> None:
    """The Docker image runs collectstatic with the manifest storage: the sidecar's files
    must come through it (a broken reference inside them would fail the build)."""
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    call_command("collectstatic", interactive=False, verbosity=0)

    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
    for name in (
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-standalone-preset.js",
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css",
        "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
    ):
        assert (tmp_path / "static" / manifest[name]).is_file(), name


@pytest.mark.django_db
def test_redoc_loads_only_local_static_files_and_no_fonts(client: Client, settings: Any) -> None:
    response = client.get("/api/redoc/")
    assert response.status_code == 200
    html = response.content.decode()
    parser = _Assets()
    parser.feed(html)

    assert "http://" not in html
    assert "https://" not in html  # drf-spectacular's own page loads Google Fonts
    assert "fonts.g" not in html
    assert len(parser.urls) == 1, parser.urls  # Redoc's standalone bundle
    (url,) = parser.urls
    assert url.startswith(settings.STATIC_URL), url
    source = finders.find(url.removeprefix(settings.STATIC_URL))
    assert isinstance(source, str), f"{url} is not a static file"
    served = client.get(url)
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == Path(source).read_bytes()  # type: ignore[attr-defined]
    assert '<redoc spec-url="/api/schema/">' in html
