"""The live channel: WebSocket /web, Server-Sent Events, and what they follow."""
