"""Where decisions land: the ClickHouse audit store, its migrations and the trail's verification."""
