"""Where entries and feed state live: the Store protocol (protocol.py), the SQLite store behind
it (sqlite.py and its schema, rows, connection and threads), search, backups and the lock."""
