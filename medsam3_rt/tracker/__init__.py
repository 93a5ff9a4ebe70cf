"""Streaming segmentation of volumes and videos: detector + tracker memory, as Sam3VideoModel."""
