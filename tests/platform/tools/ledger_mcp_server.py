"""An MCP stdio server (the SDK's `MCPServer`) whose one tool has a side effect a test can
count: ``record(note)`` appends a line to the file named by ``LEDGER_PATH``."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("ledger", log_level="ERROR")


@server.tool()
def record(note: str) -> str:
    """Append the note to the ledger (one line per execution)."""
    with open(os.environ["LEDGER_PATH"], "a", encoding="utf-8") as ledger:
        ledger.write(note + "\n")
    return f"recorded {note}"


if __name__ == "__main__":
    server.run("stdio")
