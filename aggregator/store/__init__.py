"""Where entries and feed state live: the SQLite store, its schema, search and backups."""
