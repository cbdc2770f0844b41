"""MySQL (second level, durable): versions, history, webhooks, tags' ledgers."""
