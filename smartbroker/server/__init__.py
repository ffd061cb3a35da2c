"""The asyncio side: listeners, the per-connection protocol adapter, write coalescing."""
