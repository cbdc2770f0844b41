"""The serving API: segment membership, listings, user segments and events, over HTTP."""
