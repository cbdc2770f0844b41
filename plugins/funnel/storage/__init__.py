"""Storage adapters: the layout spec, MySQL, Redis and HiveServer2. Import ``core`` only."""
