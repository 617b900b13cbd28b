"""The agents app's REST API (thin views over agentflow.services)."""
