"""Network plumbing that channels and providers share, and that imports nothing else of Chorus's."""
