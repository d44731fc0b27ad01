"""A module that takes an hour to import: a parse worker preloading it never gets ready."""

import time

time.sleep(3600)
