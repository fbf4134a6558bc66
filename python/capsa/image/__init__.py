"""Images: references, the content store, archive formats."""
