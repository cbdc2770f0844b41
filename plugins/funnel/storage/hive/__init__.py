"""HiveServer2: submit, poll, cancel and stream a query."""
