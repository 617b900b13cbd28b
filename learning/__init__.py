"""Golden paths, feedback, the activity stream and graph, webhooks, playbooks (SPEC 9, 10)."""
