"""Helpers that belong to one lesson only (``recurrent`` and ``charlm`` for lesson 08)."""
