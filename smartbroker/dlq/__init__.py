"""Dead-lettering: x-death records, DLX routing, cycle detection (and, later, redrive)."""
