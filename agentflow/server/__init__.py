"""The Django project: settings, URLs, ASGI and Celery applications."""

# Load the Celery app with Django so @shared_task binds to it in every process.
from agentflow.server.celery import app as celery_app

__all__ = ["celery_app"]
