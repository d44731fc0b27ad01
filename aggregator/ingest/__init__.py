"""Polling one feed: fetch, parse, identify, sanitise, decide when next."""
