"""Signals other apps connect to instead of reaching into HITL's models.

``review_decided(sender=HITLRequest, request=<HITLRequest>, decision=<str>)`` is sent once
per decided request, inside the decision's transaction, after the run was resumed:

* ``decision`` is ``approve``, ``edit`` or ``reject``; a request the SLA policy
  auto-rejected arrives as ``reject`` with ``request.status == "expired"``;
* ``request`` carries the question, the proposed answer, the delivered text
  (``request.response`` for an edit), intent, sources, reason and reviewer.

Receivers that write rows commit or roll back with the decision (so a recorded outcome
is never lost nor recorded for a decision that did not happen); an exception rolls the
decision back. Slow work (embeddings, webhooks) belongs in a Celery task enqueued with
``transaction.on_commit``. The learning loop (golden paths) connects here.
"""

from __future__ import annotations

from django.dispatch import Signal

review_decided = Signal()
