"""Use cases over the stores: refresh, tag load, restore, ingest, preview, delivery, catalog."""
