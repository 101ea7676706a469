"""The engine: graph IR, one asyncio scheduler, events. Imports nothing heavy."""
