"""Media: what an input holds (ffprobe), where its windows fall and which frames they sample, turning windows of
audio into one track, muxing that track into the video, and rendering synthetic test clips.

May import: foley.config. Knows nothing of models, storage or jobs: it works on local files and arrays.
"""
