"""Feed aggregator: polls many feeds, keeps their entries in SQLite, republishes merged outputs."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/feed-aggregator/feed-aggregator"
