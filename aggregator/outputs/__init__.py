"""Merged outputs: filters, dedupe, the plan, feedgen publishing, pages, OPML, caching."""
