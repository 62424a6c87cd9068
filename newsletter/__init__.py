"""newsletter: build, archive and send a partnership network's newsletter.

Read the stages in pipeline.py; the file list is the architecture (see README.md).
"""

__version__ = "0.1.0"
