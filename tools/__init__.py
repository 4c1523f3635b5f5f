"""Developer tools run by the Makefile (``make demo``, ``make bench``); not part of the library."""
