"""Retrieval for other programs: the HTTP JSON API (``http``), the MCP server (``mcp``) and what they share:
the operations on one collection (``operations``), their limits (``limits``) and the JSON shapes, which are the
CLI's (``results``)."""
