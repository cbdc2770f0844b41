"""Webhook subscriptions: each version's entered and exited ids, POSTed in signed batches.

Pure parts: ``signing`` (the HMAC signature and its check), ``plan`` (batches of a version,
backoff) and ``rules`` (what a subscription may be). I/O: ``sender`` (one HTTP POST, with
timeouts) and ``deliver`` (a run over every enabled subscription, on the stores).
"""
