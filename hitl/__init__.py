"""Human in the loop: review requests, the SLA-ordered queue, assignment, escalation (SPEC 6)."""
