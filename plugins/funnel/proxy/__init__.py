"""Proxy segments: per-user tags and the rules answered over them."""
