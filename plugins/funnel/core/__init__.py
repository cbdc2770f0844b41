"""The pure core: values, rules and plans. Imports nothing of funnel outside ``core`` and reads no setting."""
