"""The two member stores: MySQL (durable, versioned) and Redis (serving)."""
