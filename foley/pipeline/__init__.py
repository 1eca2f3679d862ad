"""Job plumbing for the jobs over videos (dub, embed): the job kinds, a video's row, Ray Data stage helpers, the
manifest, and the run that plans, streams and reports.

May import: foley.config, foley.storage, foley.media, foley.models.
"""
