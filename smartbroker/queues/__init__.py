"""Queue types (classic, stream) behind one interface (base.Queue)."""
