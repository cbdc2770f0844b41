"""Redis (first level, serving): segment sets, the lock, the change feed, the lean client."""
